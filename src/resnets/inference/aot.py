"""Compiled once, loaded after: the compiled modes on the CPU run a network compiled ahead of time by
AOTInductor, kept on disk.

The first call for an image shape exports the network with the batch size left free, compiles it with its
weights frozen as constants (tens of seconds for ResNet-20, minutes for ResNet-50 on a few cores) and writes
the package under ``cache_dir()/compiled``, named by a digest of everything that decides the code: the
network's structure and weights, the image shape and number format, torch's version and the CPU's features.
Every later call, in this process or the next ``resnets predict``, loads it in milliseconds. A changed weight,
shape, torch or processor makes a new package; ``rm -r ~/.cache/resnets/compiled`` clears them all.
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ResnetsError
from ..files import cache_dir
from ..machine import cpu_flags, cpu_isa

log = logging.getLogger("resnets")

Transform = Callable[[nn.Module], nn.Module]
MAX_BATCH = 1 << 16  # the largest batch a package takes (the export needs a bound)
EXPORT_BATCH = 2  # an export at batch 1 would fix the batch size to 1


def package_key(net: nn.Module, shape: tuple[int, ...], dtype: torch.dtype, salt: bytes = b"") -> str:
    """A digest of what the compiled code depends on: ``net``'s structure and weights, the image ``shape``
    (channels, height, width), ``dtype``, torch's version, the CPU's instruction set (and the level oneDNN is capped
    at), and ``salt`` (whatever else decides it, such as the calibration images of a quantized network)."""
    h = hashlib.sha256(salt + f"{torch.__version__}|{torch.backends.cpu.get_cpu_capability()}|"
                       f"{' '.join(sorted(cpu_flags()))}|{cpu_isa()}|{dtype}|{tuple(shape)}|{net}".encode())
    for name, value in net.state_dict().items():
        h.update(f"{name}|{value.dtype}|{tuple(value.shape)}".encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def images_digest(images: torch.Tensor) -> bytes:
    """A digest of calibration ``images``: salt for the key of a network made from them (a quantized one)."""
    return hashlib.sha256(images.float().contiguous().numpy().tobytes()).digest()


def check_calibrated(mode: str, calibrated: tuple[int, ...], shape: tuple[int, ...]) -> None:
    """Images of the calibration's size (``(C, H, W)``), else one line: a quantized network's scales and
    cached form hold for that size only."""
    if tuple(shape) != tuple(calibrated):
        raise ResnetsError(f"the {mode} network was calibrated on {'x'.join(map(str, calibrated))} images, got "
                           f"{'x'.join(map(str, shape))}: calibrate on images of the size it runs")


def package_path(net: nn.Module, shape: tuple[int, ...], dtype: torch.dtype, salt: bytes = b"") -> Path:
    """Where the package of ``net`` for images of ``shape`` in ``dtype`` is kept (whether or not it exists)."""
    return cache_dir() / "compiled" / f"{package_key(net, shape, dtype, salt)}.pt2"


def compiled_package(net: nn.Module, shape: tuple[int, ...], dtype: torch.dtype, salt: bytes = b"",
                     transform: Transform | None = None) -> Path:
    """The AOTInductor package of ``net`` for images of ``shape`` in ``dtype``: from the cache, else
    compiled now and written there atomically. ``transform``, where given, makes the network that is compiled
    from ``net`` (a quantized one, say) and is called only when nothing is cached: ``salt`` must then name
    whatever else it depends on."""
    path = package_path(net, shape, dtype, salt)
    if path.is_file():
        return path
    log.info("compiling the network for %s images once (kept in %s)", "x".join(map(str, shape)), path.parent)
    example = torch.zeros(EXPORT_BATCH, *shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    compiled = net if transform is None else transform(net)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pytree deprecations inside torch.export
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\._inductor")  # its own notes
        program = torch.export.export(compiled, (example,), dynamic_shapes=({0: batch},))
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.stem}.{os.getpid()}.pt2")
        try:
            torch._inductor.aoti_compile_and_package(program, package_path=str(partial),
                                                     inductor_configs={"freezing": True})
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    return path


def aot_runner(net: nn.Module, dtype: torch.dtype, salt: bytes = b"", transform: Transform | None = None
               ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from float32 NCHW images to float32 logits that runs ``net`` (in eval mode, on the CPU)
    compiled ahead of time in ``dtype``, loading or compiling one package per image shape it meets
    (``transform`` and ``salt``: see ``compiled_package``)."""
    loaded: dict[tuple[int, ...], Any] = {}

    def run(x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape[1:])
        if shape not in loaded:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                package = compiled_package(net, shape, dtype, salt, transform)
                loaded[shape] = torch._inductor.aoti_load_package(str(package))
        return loaded[shape](x.to(dtype).contiguous(memory_format=torch.channels_last)).float()

    return run
