"""Experience hooks that write what the runner measured: results.json and the W&B run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from neumeta_cl.metrics import summarize
from neumeta_cl.runner.hooks import ExperienceHook
from neumeta_cl.tracking import wandb_run
from neumeta_cl.tracking.results import ResultsFile


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


class ResultsRecorder(ExperienceHook):
    """Keeps ``results.json`` current after every experience, and marks how the run ended."""

    def __init__(self, path: Path, header: dict):
        self.path, self.header = Path(path), header
        self.file: ResultsFile | None = None

    def on_run_start(self, runner) -> None:
        o = runner.outcome
        self.file = ResultsFile(self.path, {**self.header, "status": "running", "started": _now(),
                                            "b": o.b, "R": [], "experiences": [], "metrics": {}})

    def on_experience_end(self, runner, index: int) -> None:
        o = runner.outcome
        self.file.update(R=o.R[: index + 1], experiences=o.experiences,
                         metrics=run_metrics(o.R, o.b, o.experiences))

    def on_run_end(self, runner) -> None:
        o = runner.outcome
        if self.file is None:  # failed before the first evaluation finished
            self.file = ResultsFile(self.path, {**self.header, "b": None, "R": [], "experiences": [], "metrics": {}})
        t = len(o.experiences)
        self.file.update(status=o.status, reason=o.reason, finished=_now(), R=o.R[:t],
                         metrics=run_metrics(o.R, o.b, o.experiences))


class WandbRecorder(ExperienceHook):
    """Per-experience accuracies, the accuracy matrix (table + heatmap) and the final summary."""

    def __init__(self, logger):
        self.logger = logger

    def on_run_start(self, runner) -> None:
        b = runner.outcome.b
        wandb_run.log_metrics(self.logger, {f"init/acc_exp{j}": float(v) for j, v in enumerate(b)}, runner.steps.step)

    def on_experience_end(self, runner, index: int) -> None:
        o = runner.outcome
        e = o.experiences[-1]
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
        wandb_run.log_metrics(self.logger, metrics, runner.steps.step)
        wandb_run.log_accuracy_matrix(self.logger, o.R[: index + 1], runner.steps.step)
        if e.get("widths_eval"):
            wandb_run.log_width_table(self.logger, e["widths_eval"], runner.steps.step)

    def on_run_end(self, runner) -> None:
        o = runner.outcome
        summary = {k: v for k, v in run_metrics(o.R, o.b, o.experiences).items() if v is not None}
        summary["status"] = o.status
        if o.reason:
            summary["reason"] = o.reason
        wandb_run.finish(self.logger, summary, exit_code=0 if o.status == "completed" else 1)
