"""Pruning that pays on the device: structured channel removal (a smaller dense model), unstructured magnitude
sparsity (a bundle that compresses), fine-tuning with labels or by distillation — Keras 3, PyTorch and ONNX."""
