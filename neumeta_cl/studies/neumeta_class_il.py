"""NeuMeta without task labels against the memory baselines: the ``neumeta_class_il`` experiment.

``figures`` reads each run's results.json: ACC per strategy (mean and sample std over seeds) and,
for the NeuMeta variants, ACC at every width of their width sweeps after the whole stream, and
(with a task classifier) at every width's parameter budget split between the classifier and the
task networks (``budget_eval``); ``targets`` checks the experiment's claims (at least replay's ACC at
full width; 25% and 50% within 3 points of full width, uniformly and as a budget).
``scripts/neumeta_class_il.py`` is the command line.
"""

from __future__ import annotations

from neumeta_cl.report.stats import json_pair, mean_std


def _pair(values) -> list[float]:
    return json_pair(*mean_std(values)[:2])


def figures(runs: dict[str, list[dict]]) -> dict:
    """``runs``: strategy label -> the results.json of each seed."""
    acc = {label: _pair([r["metrics"]["acc"] for r in rs]) for label, rs in runs.items()}
    by_width, by_budget = _by_fraction(runs, "widths_eval"), _by_fraction(runs, "budget_eval")
    targets = {}
    if "replay" in acc:
        for label, widths in by_width.items():
            full = widths.get("1")
            if full is None:
                continue
            targets[f"{label}_at_least_replay"] = bool(full[0] >= acc["replay"][0])
            for name, accs in (("narrow", widths), ("narrow_budget", by_budget.get(label))):
                if accs is not None:
                    targets[f"{label}_{name}_within_3pt"] = bool(all(full[0] - accs[f][0] <= 0.03
                                                                      for f in ("0.25", "0.5") if f in accs))
    memories = {label: rs[0]["experiences"][-1]["strategy"].get("memory_samples") for label, rs in runs.items()}
    return {"acc_classil": acc, "acc_classil_by_width": by_width, "acc_classil_by_budget": by_budget,
            "split_by_budget": _splits(runs), "seeds": max(len(rs) for rs in runs.values()),
            "memory_samples": {k: v for k, v in memories.items() if v is not None}, "targets": targets}


def _by_fraction(runs: dict[str, list[dict]], key: str) -> dict:
    """label -> {fraction: [mean, std]} of ``acc_seen`` in the last experience's ``key`` rows."""
    out = {}
    for label, rs in runs.items():
        sweeps = [r["experiences"][-1].get(key) for r in rs]
        if all(sweeps):
            out[label] = {f"{w['fraction']:g}": _pair([next(v["acc_seen"] for v in s if v["fraction"] == w["fraction"])
                                                       for s in sweeps]) for w in sweeps[0]}
    return out


def _splits(runs: dict[str, list[dict]]) -> dict:
    """label -> {fraction: [classifier widths, task widths, parameters]} of the budget deployments
    (the same for every seed: they follow from the budget alone)."""
    return {label: {f"{w['fraction']:g}": [w["classifier_widths"], w["task_widths"], w["params"]]
                    for w in rs[0]["experiences"][-1]["budget_eval"]}
            for label, rs in runs.items() if rs[0]["experiences"][-1].get("budget_eval")}


def render(figs: dict, title: str):
    from rich.table import Table

    fractions = sorted({f for w in figs["acc_classil_by_width"].values() for f in w}, key=float)
    table = Table(title=f"{title} · ACC, mean ± sample std (ddof=1) over {figs['seeds']} seed(s)")
    for col in ("strategy", "ACC", *[f"{float(f):.1%} width" for f in fractions]):
        table.add_column(col, justify="right")
    for label, (mean, std) in figs["acc_classil"].items():
        widths = figs["acc_classil_by_width"].get(label, {})
        table.add_row(label, f"{mean:.4f} ± {std:.4f}",
                      *[f"{widths[f][0]:.4f} ± {widths[f][1]:.4f}" if f in widths else "-" for f in fractions])
        budget = figs.get("acc_classil_by_budget", {}).get(label)
        if budget:  # the same parameters, the task classifier first (hypernet.budget)
            table.add_row(f"{label}, each width's parameters split", "",
                          *[f"{budget[f][0]:.4f} ± {budget[f][1]:.4f}" if f in budget else "-" for f in fractions])
    return table


def missed_targets(figs: dict) -> list[str]:
    return [k for k, ok in figs["targets"].items() if not ok]


def summarise(result) -> dict:
    """``figures`` of an ``experiment.run_experiment`` result."""
    from neumeta_cl.tracking.results import load_results

    return figures({label: [load_results(r.results_path) for r in rs] for label, rs in result.runs.items()})
