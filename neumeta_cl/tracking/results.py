"""``runs/<run-name>/results.json``: the single source of truth for tables and plots.

The file is rewritten atomically after every experience, so a crash or a diverged loss never
loses an experience that finished.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def _jsonable(value: Any) -> Any:
    """NaN/inf become null (JSON has no NaN); tensors and numpy values become lists/numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    return value


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".results-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(_jsonable(data), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


class ResultsFile:
    """A dict mirrored to disk. ``update`` merges keys and writes the file immediately."""

    def __init__(self, path: Path, initial: dict):
        self.path = Path(path)
        self.data = dict(initial)
        write_json_atomic(self.path, self.data)

    def update(self, **fields) -> None:
        self.data.update(fields)
        write_json_atomic(self.path, self.data)


def load_results(path: Path) -> dict:
    return json.loads(Path(path).read_text())
