"""Export trained PyTorch models to ONNX model bundles (docs/runtime.md); training-side, may use torch."""
