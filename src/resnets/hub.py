"""Published weight files, offline first: looked up in the cache, else downloaded once with a progress bar,
checked against their sha256 before use, and written atomically.

The cache is ``$RESNETS_HOME/weights`` where ``RESNETS_HOME`` is set, else torch's hub cache
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``): a file torchvision or timm
downloaded before is found there and not fetched again. ``RESNETS_OFFLINE=1`` never touches the network.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from .errors import CheckpointError

CHUNK = 1 << 20
TIMEOUT_S = 60


def weights_home() -> Path:
    if os.environ.get("RESNETS_HOME"):
        return Path(os.environ["RESNETS_HOME"]) / "weights"
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _matches(digest: str, sha256: str) -> bool:
    """A full sha256, or the prefix a publisher puts in its file names (torchvision's ``resnet50-0676ba61``)."""
    return digest.startswith(sha256.lower()) and len(sha256) >= 8


def fetch(urls: Sequence[str], sha256: str, filename: str | None = None, progress: bool = True) -> Path:
    """The cached file of ``urls`` (mirrors, tried in turn), downloaded if it is not cached yet."""
    path = weights_home() / (filename or urls[0].rsplit("/", 1)[-1])
    fix = f"download {urls[0]} to {path} yourself, or pass a weights file instead"
    if path.is_file():
        if _matches(sha256_of(path), sha256):
            return path
        raise CheckpointError(f"cached {path} does not match its sha256 ({sha256}): it is damaged or another "
                              f"file; delete it to download it again ({fix})")
    if os.environ.get("RESNETS_OFFLINE") == "1":
        raise CheckpointError(f"{path.name} is not in the cache and RESNETS_OFFLINE=1: {fix}")
    errors = []
    for url in urls:
        try:
            _download(url, path, sha256, progress)
            return path
        except CheckpointError as e:
            errors.append(str(e))
    raise CheckpointError(f"{'; '.join(errors)}; {fix}")


def _download(url: str, path: Path, sha256: str, progress: bool) -> None:
    from tqdm import tqdm

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                size = int(response.headers.get("Content-Length") or 0)
                h, got = hashlib.sha256(), 0
                with tqdm(total=size or None, unit="B", unit_scale=True, desc=path.name,
                          disable=None if progress else True) as bar:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
        if size and got != size:
            raise CheckpointError(f"download of {url} stopped after {got} of {size} bytes")
        if not _matches(h.hexdigest(), sha256):
            raise CheckpointError(f"{url} does not match its sha256 ({sha256}, got {h.hexdigest()[:16]}...): "
                                  "refused")
        os.replace(tmp, path)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise CheckpointError(f"cannot download {url} ({reason})") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
