"""Running a model fast for inference, whatever trained it: batch-norm folding, the inference modes (``MODES``,
each one ``Mode`` record in ``REGISTRY``: channels_last, bfloat16, compiled, ONNX Runtime, OpenVINO, int8 in each
engine) behind one ``prepare_inference`` call, and ONNX export."""
from .fuse import fuse_bn
from .int8 import torchao_available
from .modes import (MODES, REGISTRY, WEIGHT_BYTES, Mode, Runner, available_modes, fastest_mode, get_mode,
                    prepare_inference, tolerance)
from .onnx import onnx_runner, onnx_session, onnxruntime_available
from .openvino import openvino_available

__all__ = ["MODES", "REGISTRY", "WEIGHT_BYTES", "Mode", "Runner", "available_modes", "fastest_mode", "fuse_bn",
           "get_mode", "onnx_runner", "onnx_session", "onnxruntime_available", "openvino_available",
           "prepare_inference", "tolerance", "torchao_available"]
