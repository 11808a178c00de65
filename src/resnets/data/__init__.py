"""Data: every source becomes uint8 tensors in memory, split into train / validation / test."""
from .augment import AugmentConfig, BatchAugment
from .datasets import load_data
from .loader import BatchLoader, batch_generator
from .types import ImageData, ImageSet, take

__all__ = ["AugmentConfig", "BatchAugment", "BatchLoader", "ImageData", "ImageSet", "batch_generator", "load_data",
           "take"]
