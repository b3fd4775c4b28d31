"""Read a W&B run file (``run-*.wandb``) back from disk, e.g. an offline run.

The file is W&B's 7-byte header (":W&B", magic 0xBEE1, version) followed by LevelDB's log
format: 32 KiB blocks of chunks ``crc32 (4) | length (2, little-endian) | type (1) | payload``,
where types FULL/FIRST/MIDDLE/LAST reassemble one protobuf ``Record`` each. We read it rather
than trust our own bookkeeping, so tests prove what W&B actually stored.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

_HEADER = 7
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_records(path: Path):
    """Yield the raw protobuf payload of every record in a ``.wandb`` file."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, pending = _HEADER, b""
    while pos + 7 <= len(data):
        space = _BLOCK - (pos % _BLOCK)
        if space < 7:  # block trailer padding
            pos += space
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += _BLOCK - (pos % _BLOCK) if pos % _BLOCK else 0
            continue
        if kind == _FULL:
            yield payload
        elif kind == _FIRST:
            pending = payload
        elif kind == _MIDDLE:
            pending += payload
        elif kind == _LAST:
            yield pending + payload
            pending = b""


@dataclass
class WandbRunFile:
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    exit_code: int | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)


def _merge(items) -> dict:
    """Items carry a flat ``key`` or a ``nested_key`` path (media such as tables and images)."""
    out: dict = {}
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)
    return out


def read_run(run_dir: Path) -> WandbRunFile:
    """Parse history rows, summary, config, exit code, group and tags of the run in ``run_dir``."""
    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(Path(run_dir).glob("*.wandb"))
    if not files:
        raise FileNotFoundError(f"no .wandb file in {run_dir}")
    out = WandbRunFile()
    for payload in iter_records(files[0]):
        rec = pb.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            out.history.append(_merge(rec.history.item))
        elif kind == "summary":
            out.summary.update(_merge(rec.summary.update))
        elif kind == "config":
            out.config.update(_merge(rec.config.update))
        elif kind == "run":
            out.config.update(_merge(rec.run.config.update))
            out.group = rec.run.run_group or out.group
            out.tags = list(rec.run.tags) or out.tags
        elif kind == "exit":
            out.exit_code = rec.exit.exit_code
    return out
