"""resnets: residual networks exact to their references, from model definition to training and deployment."""
from .errors import CheckpointError, ConfigError, DataError, ResnetsError
from .models import FeatureExtractor, ResNet, create_backbone, create_model, list_models
from .engine import Predictor, TrainConfig, evaluate, make_config, train

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "ConfigError", "DataError", "ResnetsError",
    "FeatureExtractor", "ResNet", "create_backbone", "create_model", "list_models",
    "Predictor", "TrainConfig", "evaluate", "make_config", "train",
]
