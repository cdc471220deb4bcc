"""The segmentation network: a timm encoder, a UPerNet decoder, named configurations, checkpoints.

Import the submodules: `config` and `sidecar` need no torch (the ONNX server reads them), the rest do.
"""
