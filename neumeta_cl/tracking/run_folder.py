"""Where a run lives: a folder named after its resolved config, and a lock on it.

The folder is ``<output_dir>/<prefix>-<hash>``: ``prefix`` is ``run_name`` or
``<benchmark>-<strategy>-s<seed>``, ``hash`` a short hash of the resolved config without the keys
that do not change the numbers (where results go, logging, progress bars, threads, the device).
The clock plays no part, so rerunning a command finds its folder again:

- finished (results.json says ``completed``): the run is skipped;
- unfinished (killed, interrupted, failed): it resumes after its last checkpoint;
- ``resume=false``: a fresh folder ``<prefix>-<hash>-<n>``. Nothing is ever deleted.

Two processes never write one folder: the second finds it locked (``fcntl.flock``) and refuses.
The kernel drops the lock when its process dies, however it dies, so a crash leaves no stale lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from neumeta_cl.errors import ConfigError, UserError

# Keys that do not change a run's numbers: two configs that differ only here are the same run.
NOT_HASHED = ("run_name", "output_dir", "resume", "logger", "train.progress_bar", "train.threads", "train.accelerator")
LOCK_FILE = ".lock"
CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"


class RunInUse(UserError):
    """Another live process holds the run folder."""

    exit_code = 75  # EX_TEMPFAIL: try again later


def config_hash(resolved: dict, length: int = 10) -> str:
    """A short hash of the config, without the keys in ``NOT_HASHED``."""
    cfg = json.loads(json.dumps(resolved, default=str))  # a deep copy of plain data
    for key in NOT_HASHED:
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def run_prefix(resolved: dict) -> str:
    name = resolved.get("run_name")
    if name is None:
        name = f"{resolved['benchmark']['name']}-{resolved['strategy']['name']}-s{resolved['seed']}"
    return str(name)


def check_run_name(name) -> None:
    if name is None:
        return
    if not isinstance(name, str):
        raise ConfigError(f"run_name must be text, got {name!r} (YAML reads it as a {type(name).__name__}); "
                          f"quote it: run_name='\"{name}\"'.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+=-]*", name):
        raise ConfigError(f"run_name '{name}' is not a folder name; use letters, digits and . _ - + = only.")


@dataclass
class RunFolder:
    path: Path
    state: str  # "new" | "resume" | "finished"
    hashed: str
    attempt: int  # 1 for <prefix>-<hash>, n for <prefix>-<hash>-<n>

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def wandb_id(self) -> str:
        """Stable across reruns of this folder, different for every other folder."""
        where = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:8]
        return f"{self.hashed}-{self.attempt}-{where}"


def _status(path: Path) -> str | None:
    try:
        return json.loads((path / RESULTS).read_text()).get("status")
    except (OSError, ValueError):
        return None


def find_run_folder(output_dir: Path, prefix: str, hashed: str, resume: bool = True) -> RunFolder:
    base = f"{prefix}-{hashed}"
    attempts = {1: Path(output_dir) / base} if (Path(output_dir) / base).exists() else {}
    for p in Path(output_dir).glob(f"{base}-*"):
        suffix = p.name[len(base) + 1:]
        if suffix.isdigit() and p.is_dir():
            attempts[int(suffix)] = p
    if not attempts:
        return RunFolder(Path(output_dir) / base, "new", hashed, 1)
    latest = max(attempts)
    if not resume:
        n = latest + 1
        return RunFolder(Path(output_dir) / f"{base}-{n}", "new", hashed, n)
    return refresh(RunFolder(attempts[latest], "", hashed, latest))


def refresh(folder: RunFolder) -> RunFolder:
    """The folder's state as its files say now (under the lock, another process may have moved it on)."""
    path = folder.path
    if _status(path) == "completed":
        state = "finished"
    else:
        state = "resume" if (path / CHECKPOINT).exists() else "new"
    return RunFolder(path, state, folder.hashed, folder.attempt)


class RunLock:
    """An exclusive lock on a run folder for as long as this process runs it."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunInUse(f"The run folder {self.path.parent} is in use by {holder}; wait for it to finish, "
                           "or stop it and rerun this command to resume.") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
