"""Export: IR graphs -> deployable artifacts (onnx, tvm, self-contained C)."""
