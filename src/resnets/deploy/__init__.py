"""Deployment of a trained checkpoint: export (ONNX, TorchScript, exported programs, safetensors), int8
quantization with its measured cost, and a prediction server with a web page."""
from .export import export_checkpoint, export_model
from .quantize import quantize_checkpoint

__all__ = ["export_checkpoint", "export_model", "quantize_checkpoint"]
