"""compressor: prune or quantize a deep-learning model for CPU and measure the result.

The pipeline is ``load -> pass (prune | quantize) -> export to ONNX -> verify parity ->
benchmark baseline and result on ONNX Runtime -> Report``. Heavy libraries (torch, onnx,
onnxruntime) are imported inside functions so that ``compressor --help`` stays fast.
"""

__version__ = "0.1.0"
