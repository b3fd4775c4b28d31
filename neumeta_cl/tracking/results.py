"""``<run folder>/results.json``: the single source of truth for tables and plots.

The file is rewritten atomically after every experience, so a crash, a kill or a diverged loss
never loses an experience that finished.
"""

from __future__ import annotations

import json
from pathlib import Path

from neumeta_cl.tracking.atomic import write_json_atomic


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
