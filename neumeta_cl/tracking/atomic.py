"""Files that a kill at any instant leaves whole: write a temporary file, then rename it.

``os.replace`` is atomic on POSIX, so readers (and a resumed run) see the previous file or the new
one, never a half-written one. The temporary file gets the permissions an ordinary file would
(0666 minus the umask): ``mkstemp`` alone leaves 0600, unreadable by the user's group.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb"):
    """Yield a file object; on success it replaces ``path`` in one step, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX + path.name + "-")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file (the object must load with ``weights_only=True``)."""
    import torch

    with atomic_file(path) as f:
        torch.save(obj, f)


def jsonable(value: Any) -> Any:
    """NaN/inf become null (JSON has no NaN); tensors and numpy values become lists/numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    return value


def write_json_atomic(path: Path, data: dict) -> None:
    with atomic_file(path, "w") as f:
        json.dump(jsonable(data), f, indent=2)
        f.write("\n")
