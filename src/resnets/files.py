"""Writing files safely (``atomic_write`` leaves either the old file or the whole new one, never a part) and
where the caches live (``cache_dir``)."""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``.

    A crash at any moment leaves either the old file or the new one, never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # a folder that takes no new files (read-only, no permission): name the file asked for
        raise OSError(e.errno, f"cannot write there ({e.strerror}); nothing was written", str(path)) from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # what open() would give, not mkstemp's owner-only 0600
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        full = disk_full(e, path, "the previous file is intact" if path.exists() else "nothing was written")
        if full is not None:
            raise full from None
        raise


_NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # a full disk, a file-size limit, a quota


def disk_full(e: BaseException, path: str | Path, left: str) -> OSError | None:
    """The error to raise where ``e`` means there was no room to write ``path`` (``left``: what is left as it
    was), naming the file and the fix; None for any other error."""
    if not isinstance(e, OSError) or e.errno not in _NO_ROOM:
        return None
    return OSError(e.errno, f"no room to write it ({e.strerror}); {left}: free some space and run again", str(path))


def cache_dir() -> Path:
    """Where decoded datasets and compiled networks are kept: ``$RESNETS_CACHE``, else ``~/.cache/resnets``."""
    return Path(os.environ.get("RESNETS_CACHE", Path.home() / ".cache" / "resnets"))
