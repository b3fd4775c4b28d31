"""The runs a table or plot reads: every results.json under some folders, and what to group them by."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from neumeta_cl.errors import UserError
from neumeta_cl.tracking.results import load_results

RESULTS = "results.json"


@dataclass
class Run:
    path: Path  # its results.json
    data: dict

    @property
    def status(self) -> str:
        return self.data.get("status", "completed")

    @property
    def finished(self) -> bool:
        return self.status == "completed"

    @property
    def labels(self) -> dict:
        return (self.data.get("sweep") or {}).get("labels") or {}

    def value(self, key: str):
        """A grouping value: the run's sweep label ``key``, else the config key (``strategy`` -> its name)."""
        if key in self.labels:
            return str(self.labels[key])
        node = self.data.get("config") or {}
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if key == "seed":
                    return str(self.data.get("seed"))
                return None
            node = node[part]
        if isinstance(node, dict):
            node = node.get("name")
        if isinstance(node, list):
            return "[" + ",".join(map(str, node)) + "]"
        return None if node is None else str(node)

    def metric(self, name: str):
        return (self.data.get("metrics") or {}).get(name)


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Every run under ``paths`` (run folders, sweep folders, or results.json files), in a stable order.

    A sweep folder's runs come in the sweep's own order (its ``sweep.json``), so tables list
    strategies in the order the sweep gave them.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"{p} does not exist; give run folders, sweep folders or results.json files.")
        if p.is_file():
            files.append(p)
            continue
        manifest = p / "sweep.json"
        ordered = []
        if manifest.exists():
            try:
                ordered = [Path(r["folder"]) / RESULTS for r in json.loads(manifest.read_text())["runs"]]
            except (ValueError, KeyError):
                ordered = []
        rest = sorted(set(p.rglob(RESULTS)) - set(ordered))
        files += [f for f in ordered if f.exists()] + rest
    seen, runs = set(), []
    for f in files:
        key = f.resolve()
        if key in seen:
            continue
        seen.add(key)
        try:
            runs.append(Run(f, load_results(f)))
        except (OSError, ValueError) as e:
            raise UserError(f"{f} is not a readable results.json ({e}).") from None
    if not runs:
        raise UserError(f"No results.json under {', '.join(map(str, paths))}; give the folders a sweep or run wrote.")
    return runs
