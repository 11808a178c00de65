"""Deployment: batch-norm folding, fast inference modes, export."""
from .fuse import fuse_bn
from .inference import MODES, fastest_mode, native_bf16, prepare_inference

__all__ = ["MODES", "fastest_mode", "fuse_bn", "native_bf16", "prepare_inference"]
