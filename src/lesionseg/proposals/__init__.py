"""Box-prompted mask proposals for the reviewer: LiteMedSAM, a medical foundation model, on ONNX Runtime."""
