"""Export: trained towers and OpenCLIP checkpoints → ONNX bundles, with parity checks."""
