"""Training, evaluation and prediction."""
from .config import TrainConfig, list_recipes, make_config
from .evaluate import Predictor, evaluate
from .train import TrainResult, train

__all__ = ["Predictor", "TrainConfig", "TrainResult", "evaluate", "list_recipes", "make_config", "train"]
