"""Deployment: batch-norm folding, fast inference modes, export."""
from .fuse import fuse_bn
from .inference import MODES, native_bf16, prepare_inference

__all__ = ["MODES", "fuse_bn", "native_bf16", "prepare_inference"]
