"""Plugins that write what the runner measured: results.json and the W&B run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from neumeta_cl.metrics import summarize
from neumeta_cl.protocol import Plugin
from neumeta_cl.tracking import wandb_run
from neumeta_cl.tracking.results import ResultsFile, load_results


def run_metrics(R: np.ndarray, b: np.ndarray, experiences: list[dict]) -> dict:
    """ACC/BWT/FWT/forgetting over the finished experiences, plus mean adaptation speed."""
    t = len(experiences)
    if t == 0:
        return {}
    metrics = summarize(R[:t, :t], b[:t])
    for key in ("lca", "steps_to_95", "seconds_to_95"):
        values = [e[key] for e in experiences if e[key] is not None]
        metrics[key] = float(np.mean(values)) if values else None
    gaps = [e["stability"]["gap"] for e in experiences if e.get("stability")]
    metrics["stability_gap"] = float(np.mean(gaps)) if gaps else None
    metrics["train_seconds"] = float(sum(e["train_seconds"] for e in experiences))
    metrics["final_params"] = experiences[-1].get("parameters")
    # Morph overhead: scheduled and policy morphs, and strategies' own (prune_grow's pack step).
    metrics["morph_ms"] = float(sum(m["wall_ms"] for e in experiences for m in e.get("morphs", [])))
    metrics["experiences_done"] = t
    return metrics


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


class ResultsRecorder(Plugin):
    """Keeps ``results.json`` current after every experience, and marks how the run ended.

    A resumed run continues the same file: the experiences restored from the checkpoint stay, and
    ``attempts`` lists every start with the experience it started from.
    """

    def __init__(self, path: Path, header: dict, attempt: dict | None = None):
        self.path, self.header, self.attempt = Path(path), header, dict(attempt or {})
        self.file: ResultsFile | None = None

    def _write(self, run, **fields) -> None:
        o = run.outcome
        done = len(o.records)
        fields = dict(R=o.R[:done], experiences=o.experiences, metrics=run_metrics(o.R, o.b, o.experiences), **fields)
        if self.file is None:
            self.file = ResultsFile(self.path, {**self.header, "b": None, **fields})
        else:
            self.file.update(**fields)

    def before_run(self, run) -> None:
        o = run.outcome
        previous = load_results(self.path) if o.resumed_from is not None and self.path.exists() else {}
        attempts = [*previous.get("attempts", []), {**self.attempt, "started": _now(), "from_experience": o.resumed_from or 0}]
        self.file = None  # a fresh file: the header of this attempt, then what the outcome holds
        self._write(run, status="running", reason=None, signal=None, started=previous.get("started", _now()),
                    attempts=attempts, b=o.b)

    def after_experience(self, run) -> None:
        self._write(run)

    def after_run(self, run) -> None:
        o = run.outcome
        self._write(run, status=o.status, reason=o.reason, signal=o.signal, finished=_now())


class WandbRecorder(Plugin):
    """Per-experience accuracies, the accuracy matrix (table + heatmap) and the final summary."""

    def __init__(self, log: "wandb_run.WandbLog | None"):
        self.log = log

    def before_run(self, run) -> None:
        if self.log is None or run.outcome.resumed_from is not None:  # a resumed run logged these already
            return
        b = run.outcome.b
        self.log.metrics({f"init/acc_exp{j}": float(v) for j, v in enumerate(b)}, run.steps.step)

    def after_experience(self, run) -> None:
        if self.log is None:
            return
        o, index = run.outcome, run.index
        e = run.record.to_dict()
        metrics = {f"eval/acc_exp{j}": float(v) for j, v in enumerate(o.R[index])}
        metrics["eval/acc_seen"] = float(np.mean(o.R[index, : index + 1]))
        metrics["experience"] = index
        for key in ("lca", "steps_to_95", "seconds_to_95", "train_seconds"):
            if e[key] is not None:
                metrics[f"experience/{key}"] = float(e[key])
        if e.get("stability"):
            metrics["experience/stability_gap"] = float(e["stability"]["gap"])
            metrics["experience/acc_earlier_min"] = float(e["stability"]["mean_min"])
        for k, m in enumerate(e.get("morphs", [])):
            for key in ("wall_ms", "params_before", "params_after", "flops_before", "flops_after",
                        "preservation_error", "acc_seen_before", "acc_seen_after", "steps_to_recover", "stability_min"):
                if m.get(key) is not None:
                    metrics[f"morph/{k}/{key}"] = float(m[key])
        for key, value in (e.get("strategy") or {}).get("scalars", {}).items():
            metrics[f"strategy/{key}"] = float(value)
        for row in e.get("widths_eval") or []:
            metrics[f"width/{row['fraction']:g}/acc_seen"] = row["acc_seen"]
            metrics[f"width/{row['fraction']:g}/gen_ms"] = row["gen_ms"]
        for row in e.get("budget_eval") or []:
            metrics[f"budget/{row['fraction']:g}/acc_seen"] = row["acc_seen"]
        step = run.steps.step
        self.log.metrics(metrics, step)
        self.log.accuracy_matrix(o.R[: index + 1], step)
        if e.get("widths_eval"):
            self.log.width_table(e["widths_eval"], step)

    def after_run(self, run) -> None:
        if self.log is None:
            return
        o = run.outcome
        summary = {k: v for k, v in run_metrics(o.R, o.b, o.experiences).items() if v is not None}
        summary["status"] = o.status
        if o.reason:
            summary["reason"] = o.reason
        self.log.finish(summary, exit_code=0 if o.status == "completed" else 1)
