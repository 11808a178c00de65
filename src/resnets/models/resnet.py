"""One configurable ResNet: the ImageNet family (torchvision/timm layout) and the CIFAR family of the paper.

The network is ``stem -> layer1..layerN -> global average pool -> fc``. Stage ``i`` has ``layers[i]``
blocks of width ``widths[i]``; the first stage keeps the resolution and each later stage halves it.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Callable, Iterator, Literal, Sequence, cast

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError

from .blocks import Block, BlockOptions
from .layers import NormLayer, Shortcut, conv3x3, global_avg_pool, make_shortcut
from .momentum import MomentumStage

# "imagenet": 7x7/2 conv + 3x3/2 max-pool (reduction 4). "deep": ResNet-D's three 3x3 convs + max-pool.
# "cifar": one 3x3/1 conv, no pooling (paper section 4.2).
Stem = Literal["imagenet", "deep", "cifar"]


class FeatureInfo(list):
    """The feature maps a network gives, in timm's numbering: index 0 is the stem's output, 1..N the stages'.
    A list of ``dict(num_chs, reduction, module)``, with timm's accessors."""

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self]

    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self]

    def module_name(self) -> list[str]:
        return [f["module"] for f in self]


class StagedNet(nn.Module):
    """The uniform model API of every network here: ``stem -> layer1..layerN -> head``.

    A subclass builds ``layer1``..``layerN`` (``nn.Sequential`` stages), ``fc`` and ``norm`` (or None), sets
    ``num_stages``, ``num_features``, ``num_classes``, ``feature_info`` (a ``FeatureInfo``: the stem's map, then
    each stage's), ``grad_checkpointing = ()`` and ``frozen_stages = None``, and defines ``forward_stem``,
    ``forward_head`` and ``stem_modules`` (and ``forward_stem_split`` where the stem pools after its map).
    """

    num_stages: int
    num_features: int
    in_chans: int
    num_classes: int
    feature_info: FeatureInfo
    fc: nn.Module
    norm: nn.Module | None
    relu: nn.Module
    grad_checkpointing: tuple[int, ...]  # indices of the stages whose blocks are recomputed
    frozen_stages: int | None  # stem + this many stages are frozen (None: nothing)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def stem_modules(self) -> list[nn.Module]:
        """The modules of the stem (frozen with the first stages)."""
        raise NotImplementedError

    def fixed_parameters(self) -> list[nn.Parameter]:
        """Parameters that never train (``freeze(None)`` leaves them frozen)."""
        return []

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def _run_stem(self, x: torch.Tensor) -> torch.Tensor:
        if not self.grad_checkpointing or not torch.is_grad_enabled():
            return self.forward_stem(x)
        # the stem is the cheapest part to recompute for the memory it holds (the highest resolution)
        return _checkpointed(self.forward_stem, x, self.stem_modules())

    def _run_stage(self, i: int, stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        if i not in self.grad_checkpointing or not torch.is_grad_enabled() or isinstance(stage, MomentumStage):
            return stage(x)  # (a momentum stage recomputes its steps itself)
        for blk in stage:
            x = _checkpointed(blk, x, [blk])
        return x

    def check_feature_indices(self, indices: Sequence[int]) -> Sequence[int]:
        """``indices`` if it names one or more feature maps (``0``: the stem, ``1..num_stages``: the stages, as
        in timm); a ``ConfigError`` if not."""
        if not indices or not set(indices) <= set(range(self.num_stages + 1)):
            raise ConfigError(f"feature indices must be in 0..{self.num_stages} (0: the stem, 1..{self.num_stages}: "
                              f"the stages), got {list(indices)}")
        return indices

    def forward_stem_split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The stem's feature map (index 0) and what the first stage reads (the same, unless the stem pools)."""
        y = self.forward_stem(x)
        return y, y

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int] | None = None) -> list[torch.Tensor]:
        """The feature maps in ``indices`` (default: all), in timm's numbering: 0 is the stem's output, 1..N the
        stages' (a ResNet-50: strides 2, 4, 8, 16, 32)."""
        want = set(range(self.num_stages + 1) if indices is None else self.check_feature_indices(indices))
        if 0 in want:
            stem, x = self.forward_stem_split(x)
            outs = [stem]
        else:
            x, outs = self._run_stem(x), []
        for i, stage in enumerate(self.stages, start=1):
            if i > max(want):
                break
            x = self._run_stage(i - 1, stage, x)
            if i in want:
                outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._run_stem(x)
        for i, stage in enumerate(self.stages):
            x = self._run_stage(i, stage, x)
        return self.forward_final_norm(x)

    def forward_final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The closing norm and ReLU of pre-activation networks (identity for the others)."""
        return x if self.norm is None else self.relu(self.norm(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def new_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` (0 removes it)."""
        self.num_classes = num_classes
        self.fc = self.new_classifier(num_classes)

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and the first ``frozen_stages`` stages (nothing when ``frozen_stages`` is None)."""
        if self.frozen_stages is None:
            return []
        return self.stem_modules() + self.stages[:self.frozen_stages]

    def freeze(self, stages: int | None) -> None:
        """Freeze the stem and the first ``stages`` stages for fine-tuning: no gradients, and their batch-norm
        statistics stay fixed in training mode. ``None`` unfreezes everything."""
        if stages is not None and not 0 <= stages <= self.num_stages:
            raise ConfigError(f"can freeze 0..{self.num_stages} stages (plus the stem), got {stages}")
        self.frozen_stages = stages
        fixed = {id(p) for p in self.fixed_parameters()}
        for p in self.parameters():
            p.requires_grad_(id(p) not in fixed)
        for m in self.frozen_modules():
            for p in m.parameters():
                p.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> "StagedNet":
        super().train(mode)
        for m in self.frozen_modules():
            m.eval()
        return self

    def set_grad_checkpointing(self, enable: bool = True, stages: int | None = None) -> None:
        """Recompute the stem's and each block's activations in the backward pass instead of storing them.

        ``stages=k`` limits this to the stem and the first ``k`` stages: they hold most of the activation
        memory (the highest resolutions) but only about ``k / num_stages`` of the compute, so most of the
        memory is saved for a fraction of the recomputation.
        """
        n = self.num_stages if stages is None else max(0, min(stages, self.num_stages))
        self.grad_checkpointing = tuple(range(n)) if enable else ()


def _check_output_stride(output_stride: int, multi_grid: Sequence[int] | None, stem: str,
                         layers: Sequence[int]) -> None:
    if output_stride not in (8, 16, 32):
        raise ConfigError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    if stem == "cifar" and output_stride != 32:
        raise ConfigError("the CIFAR networks end at stride 4: output_stride applies to the ImageNet networks")
    if multi_grid is not None and (output_stride == 32 or len(multi_grid) != layers[-1] or min(multi_grid) < 1):
        raise ConfigError(f"multi_grid needs output_stride 8 or 16 and one multiplier >= 1 per block of the last "
                          f"stage ({layers[-1]}), got {tuple(multi_grid)} at output stride {output_stride}")


def _checkpointed(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                  modules: list[nn.Module]) -> torch.Tensor:
    """``fn(x)`` through activation checkpointing; ``modules`` (what ``fn`` runs) keep their batch-norm
    statistics through the recomputation."""
    return checkpoint(fn, x, use_reentrant=False,
                      context_fn=lambda: (nullcontext(), running_stats_untouched(*modules)))


@contextmanager
def running_stats_untouched(*modules: nn.Module) -> Iterator[None]:
    """The batch norms in ``modules`` normalise as usual but leave their running statistics alone.

    Gradient checkpointing runs a block's forward twice in a training step; the recomputation must not
    count the batch a second time. A momentum of 0 keeps the running mean and variance exactly as they
    are (the norms' saved tensors stay those of the first forward, which the recomputation must match),
    and the batch count is put back afterwards."""
    norms = [m for module in modules for m in module.modules()
             if isinstance(m, _BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, cast(torch.Tensor, m.num_batches_tracked).clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            cast(torch.Tensor, m.num_batches_tracked).copy_(count)


class ResNet(StagedNet):
    """Residual network with a uniform API: ``forward_features``, ``forward_head``, ``reset_classifier``,
    ``forward_intermediates`` / ``feature_info`` and ``set_grad_checkpointing``.

    Args:
        block: block class (``BasicBlock``, ``Bottleneck`` or their pre-activation twins).
        layers: number of blocks in each stage.
        num_classes: classifier outputs; 0 gives a network that returns pooled features.
        in_chans: input image channels.
        widths: base width of each stage (a block outputs ``width * block.expansion`` channels).
        stem: stem kind, see ``Stem``; ``stem_width`` is its output width (doubled for "deep").
        replace_stem_pool: the stem's max-pool becomes a strided 3x3 conv + norm + ReLU (ResNet-RS).
        output_stride: 32, 16 or 8: the strides of the stages past it become dilations (torchvision's
            ``replace_stride_with_dilation``: the first block of a dilated stage keeps the dilation before it).
        multi_grid: dilation multipliers of the last stage's blocks (DeepLabv3's (1, 2, 4)), with
            ``output_stride`` < 32: block ``j`` of that stage is dilated by its rate times ``multi_grid[j]``.
        shortcut: "A", "B", "C" or None (plain network), see ``layers.Shortcut``.
        avg_down: ResNet-D downsampling in projection shortcuts.
        groups, base_width: ResNeXt cardinality and width per group (``base_width=128`` is WRN-50-2).
        se_ratio: squeeze-and-excitation reduction ratio (0 = none).
        stride_in_1x1: ResNet v1 bottlenecks (stride on the first 1x1) instead of v1.5.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth rate of the last block, rising linearly from 0 at the first.
        zero_init_last: zero the last norm (or conv) of every residual branch.
        norm_layer: normalization factory, ``nn.BatchNorm2d`` by default.
        momentum: a Momentum ResNet (Sander et al. 2021) with this gamma: every block after the first of a stage
            is a momentum step (``momentum.py``); ``momentum_invertible``: its backward recomputes the steps in
            reverse instead of storing their activations.
    """

    conv1: nn.Module  # a 7x7 convolution, or the deep stem's three 3x3 ones
    maxpool: nn.Module | None

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: Stem = "imagenet",
        stem_width: int = 64,
        replace_stem_pool: bool = False,
        output_stride: int = 32,
        multi_grid: Sequence[int] | None = None,
        shortcut: Shortcut = "B",
        avg_down: bool = False,
        groups: int = 1,
        base_width: int = 64,
        se_ratio: float = 0.0,
        stride_in_1x1: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        zero_init_last: bool = False,
        norm_layer: NormLayer | None = None,
        momentum: float | None = None,
        momentum_invertible: bool = True,
    ) -> None:
        super().__init__()
        if len(layers) != len(widths) or not layers or min(layers) < 1:
            raise ConfigError(f"layers {tuple(layers)} and widths {tuple(widths)} must be non-empty and of equal "
                              f"length")
        if in_chans < 1 or num_classes < 0:
            raise ConfigError(f"in_chans must be >= 1 and num_classes >= 0, got {in_chans} and {num_classes}")
        if not (0 <= drop_rate < 1 and 0 <= drop_path_rate < 1):
            raise ConfigError(f"drop_rate and drop_path_rate must be in [0, 1), got {drop_rate} and {drop_path_rate}")
        norm_layer = norm_layer or nn.BatchNorm2d
        opts = BlockOptions(groups, base_width, norm_layer, se_ratio, stride_in_1x1)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing: tuple[int, ...] = ()  # indices of the stages whose blocks are recomputed
        self.frozen_stages: int | None = None  # stem + this many stages are frozen (None: nothing)

        _check_output_stride(output_stride, multi_grid, stem, layers)
        stem_out = self._make_stem(stem, in_chans, stem_width, norm_layer, block.preact, replace_stem_pool)
        reduction, dilation = (1 if stem == "cifar" else 4), 1
        stem_map = "conv1" if block.preact else "relu"  # the stem's feature map: before its pool
        self.feature_info = FeatureInfo([dict(num_chs=stem_out, reduction=1 if stem == "cifar" else 2,
                                              module=stem_map)])
        total = sum(layers)
        drop_paths = [drop_path_rate * k / max(total - 1, 1) for k in range(total)]  # rising from 0, block by block
        in_chs, first = stem_out, 0
        for i, (depth, width) in enumerate(zip(layers, widths)):
            stride, previous = (1 if i == 0 else 2), dilation
            if reduction >= output_stride:  # past the output stride, a stage's stride becomes dilation
                dilation, stride = dilation * stride, 1
            reduction *= stride
            if multi_grid is not None and i == len(layers) - 1:
                dilations = [(dilation * g, dilation * g) for g in multi_grid]
            else:  # the first block keeps the dilation before it (torchvision's replace_stride_with_dilation)
                dilations = [(previous, dilation)] + [(dilation, dilation)] * (depth - 1)
            stage_shortcut = partial(make_shortcut, shortcut, norm_layer=norm_layer, avg_down=avg_down,
                                     with_norm=not block.preact, dilated=dilation > 1)
            blocks = self._make_layer(block, in_chs, width, stride, dilations, drop_paths[first:first + depth],
                                      opts, stage_shortcut)
            in_chs, first = width * block.expansion, first + depth
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks) if momentum is None else
                            MomentumStage(*blocks, gamma=momentum, invertible=momentum_invertible))
            self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f"layer{i + 1}"))
        self.num_stages = len(layers)
        self.num_features = in_chs
        # Pre-activation networks end with the norm and ReLU that the last block left out.
        self.norm = norm_layer(in_chs) if block.preact else None
        self.fc = self.new_classifier(num_classes)
        self._init_weights(zero_init_last)

    @staticmethod
    def _make_layer(block: Block, in_chs: int, width: int, stride: int, dilations: Sequence[tuple[int, int]],
                    drop_paths: Sequence[float], opts: BlockOptions,
                    shortcut: Callable[[int, int, int], nn.Module | None]) -> list[nn.Module]:
        """One stage's blocks, one per entry of ``dilations``: the first takes the stride and the shortcut that
        changes the channels or the resolution (``shortcut(in_chs, out_chs, stride)``), the rest keep both."""
        blocks: list[nn.Module] = []
        for j, (dilation, drop_path) in enumerate(zip(dilations, drop_paths, strict=True)):
            s, out_chs = (stride if j == 0 else 1), width * block.expansion
            blocks.append(block(in_chs, width, s, shortcut(in_chs, out_chs, s), opts, drop_path, dilation))
            in_chs = out_chs
        return blocks

    def _make_stem(self, stem: Stem, in_chans: int, width: int, norm_layer: NormLayer, preact: bool,
                   replace_pool: bool = False) -> int:
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False)
            out = width
        elif stem == "deep":
            self.conv1 = nn.Sequential(
                conv3x3(in_chans, width, 2), norm_layer(width), nn.ReLU(inplace=True),
                conv3x3(width, width), norm_layer(width), nn.ReLU(inplace=True),
                conv3x3(width, 2 * width),
            )  # fmt: skip
            out = 2 * width
        elif stem == "cifar":
            self.conv1 = conv3x3(in_chans, width)
            out = width
        else:
            raise ConfigError(f"unknown stem {stem!r}: expected 'imagenet', 'deep' or 'cifar'")
        self.bn1 = None if preact else norm_layer(out)
        self.relu = nn.ReLU(inplace=True)
        if stem == "cifar":
            if replace_pool:
                raise ConfigError("the CIFAR stem has no pooling to replace")
            self.maxpool = None
        elif replace_pool:  # a learned downsampling (ResNet-RS; timm's replace_stem_pool)
            self.maxpool = nn.Sequential(conv3x3(out, out, 2), norm_layer(out), nn.ReLU(inplace=True))
        else:
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        return out

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stem_split(x)[1]

    def forward_stem_split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(x)
        if self.bn1 is not None:
            x = self.relu(self.bn1(x))
        return x, (x if self.maxpool is None else self.maxpool(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = global_avg_pool(x)
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def stem_modules(self) -> list[nn.Module]:
        return [m for m in (self.conv1, self.bn1, self.maxpool) if m is not None]  # the pool: learned in ResNet-RS

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                init_last = getattr(m, "zero_init_last", None)
                if callable(init_last):
                    init_last()


class FeatureExtractor(nn.Module):
    """A backbone that returns the feature maps in ``out_indices`` (``create_model(..., features_only=True)``),
    numbered as in timm: 0 is the stem's output, 1..N the stages' (default: all of them)."""

    def __init__(self, model: StagedNet, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        self.out_indices = tuple(sorted(range(model.num_stages + 1) if out_indices is None
                                        else model.check_feature_indices(out_indices)))
        model.reset_classifier(0)
        self.model = model
        self.feature_info = FeatureInfo(model.feature_info[i] for i in self.out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, self.out_indices)
