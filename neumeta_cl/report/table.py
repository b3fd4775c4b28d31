"""Comparison tables from results.json files (mean and std over seeds)."""

from __future__ import annotations

import math

import pandas as pd

COLUMNS = {  # results.json metric -> column title
    "acc": "ACC", "bwt": "BWT", "fwt": "FWT", "forgetting": "Forgetting", "lca": "LCA10",
    "steps_to_95": "steps to 95%", "train_seconds": "train s", "final_params": "params", "morph_ms": "morph ms",
}


def metrics_frame(results: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per (label, seed) from the metrics block of each results.json."""
    rows = []
    for label, runs in results.items():
        for r in runs:
            row = {"label": label, "seed": r.get("seed"), "status": r.get("status")}
            row.update({k: r.get("metrics", {}).get(k) for k in COLUMNS})
            rows.append(row)
    return pd.DataFrame(rows)


def summary_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per label, in the label order given."""
    order = list(dict.fromkeys(frame["label"]))
    numeric = frame[["label", *COLUMNS]].astype({k: float for k in COLUMNS})
    g = numeric.groupby("label", sort=False)
    out = g.mean().add_suffix("_mean").join(g.std(ddof=0).add_suffix("_std")).join(g.size().rename("seeds"))
    return out.loc[order]


def _fmt(mean: float, std: float, seeds: int, key: str) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if key == "final_params":
        return f"{mean:,.0f}"
    digits = 1 if key in ("steps_to_95", "train_seconds", "morph_ms") else 3
    s = f"{mean:.{digits}f}"
    return s + (f" ± {std:.{digits}f}" if seeds > 1 else "")


def console():
    """A rich Console that does not wrap paths or squeeze tables when output is piped."""
    import sys

    from rich.console import Console

    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def render(summary: pd.DataFrame, title: str):
    """A rich Table for the terminal."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("strategy")
    for title_ in COLUMNS.values():
        table.add_column(title_, justify="right")
    for label, row in summary.iterrows():
        table.add_row(label, *(_fmt(row[f"{k}_mean"], row[f"{k}_std"], int(row["seeds"]), k) for k in COLUMNS))
    return table


def markdown(summary: pd.DataFrame) -> str:
    head = "| strategy | " + " | ".join(COLUMNS.values()) + " |"
    sep = "| --- |" + " ---: |" * len(COLUMNS)
    lines = [head, sep]
    for label, row in summary.iterrows():
        cells = [_fmt(row[f"{k}_mean"], row[f"{k}_std"], int(row["seeds"]), k) for k in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
