"""What a person watching a sweep sees: a live line while it runs, a summary when it ends."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text


def eta_seconds(durations: list[float], remaining: int, running: int, parallel: int) -> float | None:
    """Time left: the mean time of a finished run, times the rounds of ``parallel`` runs still to go.

    A running run counts as half done. None until a run has finished.
    """
    if not durations or parallel < 1:
        return None
    mean = sum(durations) / len(durations)
    return mean * (remaining + 0.5 * running) / parallel


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def split_submitted(submitted: int, parallel: int, sees_start: bool) -> tuple[int, int]:
    """(running, queued) of the runs handed to a launcher and not finished. A launcher that does not
    see its runs start (Ray, SLURM: a submitted run waits for resources) runs at most ``parallel``
    of them at once; the rest wait."""
    if sees_start:
        return submitted, 0
    running = min(submitted, max(parallel, 1))
    return running, submitted - running


class SweepProgress:
    """Counts of done, running, queued and failed runs with the time left; live on a terminal, one
    line per event otherwise. ``sees_start``: whether the launcher reports a run when it starts
    (local workers) or when it is submitted (Ray, SLURM; running and queued are then estimated from
    ``parallel``)."""

    def __init__(self, name: str, total: int, parallel: int, console: Console | None = None, sees_start: bool = True):
        self.name, self.total, self.parallel, self.sees_start = name, total, parallel, sees_start
        self.console = console or Console(stderr=True)
        self.done = self.skipped = self.failed = 0
        self.submitted = 0  # handed to the launcher, not finished
        self.durations: list[float] = []
        self.started = time.monotonic()
        self.live = Live(self._line(), console=self.console, refresh_per_second=2, transient=False) \
            if self.console.is_terminal else None

    def __enter__(self):
        if self.live:
            self.live.start()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.update(self._line())
            self.live.stop()

    def _line(self) -> Text:
        finished = self.done + self.skipped + self.failed
        running, queued = split_submitted(self.submitted, self.parallel, self.sees_start)
        left = self.total - finished - running
        eta = eta_seconds(self.durations, left, running, self.parallel)
        text = Text(f"sweep {self.name}: ")
        text.append(f"{finished}/{self.total} finished", style="bold")
        text.append(f" ({self.done} done, {self.skipped} skipped, ")
        text.append(f"{self.failed} failed", style="red" if self.failed else "")
        text.append(f"), {running} running" if self.sees_start else f"), ~{running} running, ~{queued} queued")
        text.append(f" · elapsed {_clock(time.monotonic() - self.started)}"
                    f" · left ~{_clock(eta) if finished < self.total else '0:00'}")
        return text

    def _show(self, event: str | None) -> None:
        if self.live:
            if event:
                self.live.console.print(event)
            self.live.update(self._line())
        elif event:
            self.console.print(event, highlight=False)

    def start(self, label: str) -> None:
        self.submitted += 1
        self._show(None if self.live else f"{'started' if self.sees_start else 'submitted'} {label}")

    def finish(self, label: str, status: str, seconds: float, acc: float | None, reason: str | None,
               was_running: bool = True) -> None:
        if was_running:
            self.submitted = max(0, self.submitted - 1)
        if status == "done":
            self.done += 1
            self.durations.append(seconds)
        elif status == "skipped":
            self.skipped += 1
        else:
            self.failed += 1
        colour = {"done": "green", "skipped": "cyan"}.get(status, "red")
        what = f"[{colour}]{status}[/] {label}"
        if acc is not None:
            what += f": ACC {acc:.3f}"
        if status == "done":
            what += f" in {seconds:.1f} s"
        if reason:
            what += f" ({reason.splitlines()[0]})"
        self._show(what)


def summary_table(rows: list[dict]) -> Table:
    """One row per run: label, status, ACC, seconds, and the results path or the reason it failed."""
    table = Table(title="sweep summary")
    for col, justify in (("run", "left"), ("status", "left"), ("ACC", "right"), ("s", "right"), ("results / reason", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    for r in rows:
        colour = {"done": "green", "skipped": "cyan"}.get(r["status"], "red")
        where = r.get("reason") if r["status"] not in ("done", "skipped") else r.get("results")
        if r["status"] not in ("done", "skipped") and r.get("log"):
            where = f"{where} · log {r['log']}"
        table.add_row(r["run"], f"[{colour}]{r['status']}[/]", "-" if r.get("acc") is None else f"{r['acc']:.3f}",
                      f"{r.get('seconds', 0):.1f}", str(where or "-"))
    return table


def stderr_console() -> Console:
    return Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 160)
