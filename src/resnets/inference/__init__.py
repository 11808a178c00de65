"""Running a model fast for inference, whatever trained it: batch-norm folding, the inference modes (``MODES``:
channels_last, bfloat16, compiled, ONNX Runtime, int8 in ONNX Runtime or in PyTorch) behind one
``prepare_inference`` call, and ONNX export."""
from .fuse import fuse_bn
from .int8 import torchao_available
from .modes import (EXAMPLE_MODES, INT8_MODES, MODES, NUMBER_FORMAT, ONNX_MODES, WEIGHT_BYTES, Runner,
                    available_modes, fastest_mode, prepare_inference, tolerance)
from .onnx import onnx_runner, onnx_session, onnxruntime_available

__all__ = ["EXAMPLE_MODES", "INT8_MODES", "MODES", "NUMBER_FORMAT", "ONNX_MODES", "WEIGHT_BYTES", "Runner",
           "available_modes", "fastest_mode", "fuse_bn", "onnx_runner", "onnx_session", "onnxruntime_available",
           "prepare_inference", "tolerance", "torchao_available"]
