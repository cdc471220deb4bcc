"""Inference engines behind one small interface (see `uncertainty.sampling.Backend`).

`pytorch_backend` needs torch; `onnx_backend` needs only ONNX Runtime and NumPy.
"""
