"""Networks: blocks, the configurable ``ResNet``, the registry of named models and safe weight loading."""
from . import zoo  # noqa: F401  (registers the named models)
from .backbone import FrozenBatchNorm2d, create_backbone
from .blocks import BasicBlock, BlockOptions, Bottleneck, HighwayBlock, PreActBasicBlock, PreActBottleneck
from .layers import DropPath, PadShortcut, SqueezeExcite, make_shortcut
from .loading import adapt_input_conv, extract_state_dict, load_pretrained, load_state_dict_into, read_checkpoint
from .registry import ModelSpec, create_classifier, create_model, get_model_spec, list_models, register_model
from .resnet import FeatureExtractor, ResNet

__all__ = [
    "BasicBlock", "BlockOptions", "Bottleneck", "HighwayBlock", "PreActBasicBlock", "PreActBottleneck",
    "DropPath", "PadShortcut", "SqueezeExcite", "make_shortcut",
    "adapt_input_conv", "extract_state_dict", "load_pretrained", "load_state_dict_into", "read_checkpoint",
    "ModelSpec", "create_classifier", "create_model", "get_model_spec", "list_models", "register_model",
    "FeatureExtractor", "ResNet", "FrozenBatchNorm2d", "create_backbone",
]
