"""torch.hub entries: the networks whose trained weights ship with resnets, one entry each by the weights' name.

    model = torch.hub.load("path/to/resnets", "resnet20_cifar10", source="local")   # 92.49% test top-1
    model = torch.hub.load("path/to/resnets", "resnet56_cifar10", source="local")   # 93.86% test top-1
    model = torch.hub.load("path/to/resnets", "resnet20_cifar10", source="local", pretrained=False)

The model expects images normalised by its training data's mean and std (``model.pretrained_cfg``)."""
import sys
from pathlib import Path

dependencies = ["torch", "safetensors", "yaml"]

try:
    import resnets  # noqa: F401
except ImportError:  # a clone that was not installed: import it from its source folder
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))


def _entry(name: str):
    def load(pretrained: bool = True, **kwargs):
        from resnets.engine.checkpoint import load_training_checkpoint, model_from_checkpoint
        from resnets.models import create_model

        if pretrained:
            model, ckpt = model_from_checkpoint(name)
        else:
            ckpt = load_training_checkpoint(name)
            model = create_model(ckpt["config"]["model"], num_classes=len(ckpt["classes"]),
                                 **{**ckpt["config"].get("model_args", {}), **kwargs})
        model.pretrained_cfg = {"weights": name, "classes": ckpt["classes"], "mean": ckpt["mean"], "std": ckpt["std"],
                                "input_size": (ckpt["in_chans"], ckpt["image_size"], ckpt["image_size"]),
                                "test_top1": ckpt.get("test_top1")}
        return model

    load.__name__ = name
    load.__doc__ = f"The network of the shipped weights {name}; pretrained=False: the same network untrained."
    return load


def _entries() -> dict:
    from resnets.models.loading import shipped_weights

    return {name: _entry(name) for name in shipped_weights()}


globals().update(_entries())
