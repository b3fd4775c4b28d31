"""Comparison tables from results.json files: mean ± sample std over seeds, n, best in bold.

``build`` groups runs by any keys (a sweep label such as ``strategy``, or any config key such as
``benchmark.scenario`` or ``train.lr``) into rows and columns; ``markdown``, ``latex`` (booktabs),
``csv`` and ``rich_table`` write it out. Unfinished and failed runs are listed under the table and
never averaged in. Statistics follow ``report.stats`` (ddof=1, t-interval).
"""

from __future__ import annotations

import csv as _csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from neumeta_cl.errors import UserError
from neumeta_cl.report.runs import Run
from neumeta_cl.report.stats import ci95, mean_std

# results.json metric -> (column title, decimals, which is better)
METRICS = {
    "acc": ("ACC", 3, max), "bwt": ("BWT", 3, max), "fwt": ("FWT", 3, max), "forgetting": ("Forgetting", 3, min),
    "lca": ("LCA10", 3, max), "steps_to_95": ("steps to 95%", 1, min), "seconds_to_95": ("s to 95%", 2, min),
    "stability_gap": ("stability gap", 3, None), "train_seconds": ("train s", 1, min),
    "final_params": ("params", 0, min), "morph_ms": ("morph ms", 1, min),
}
DEFAULT_METRICS = ("acc", "bwt", "fwt", "forgetting", "lca", "steps_to_95", "train_seconds", "final_params", "morph_ms")
FOOTNOTE = ("Mean ± sample std (ddof=1) over n runs{ci}; best of each column in bold. BWT and FWT average over "
            "T-1 experiences (GEM paper, Lopez-Paz & Ranzato 2017; GEM's code averages over T); forgetting as "
            "Chaudhry et al. 2018.")


@dataclass
class Cell:
    mean: float
    std: float
    n: int

    @property
    def ci(self) -> float:
        return ci95(self.std, self.n)


@dataclass
class Table:
    row_keys: list[str]
    col_keys: list[str]
    metrics: list[str]
    rows: list[tuple] = field(default_factory=list)
    cols: list[tuple] = field(default_factory=list)
    cells: dict = field(default_factory=dict)  # (row, col, metric) -> Cell
    left_out: list[Run] = field(default_factory=list)  # unfinished or failed runs
    ci: bool = False
    title: str | None = None

    def cell(self, row: tuple, col: tuple, metric: str) -> Cell | None:
        return self.cells.get((row, col, metric))

    def best(self) -> set:
        """(row, col, metric) of the best mean in each column (ties too; none where all are equal)."""
        out = set()
        for col in self.cols:
            for m in self.metrics:
                pick = METRICS.get(m, (None, None, None))[2]
                means = {r: c.mean for r in self.rows if (c := self.cell(r, col, m)) and math.isfinite(c.mean)}
                if pick is None or len(set(means.values())) < 2:  # nothing to tell apart
                    continue
                target = pick(means.values())
                out |= {(r, col, m) for r, v in means.items() if v == target}
        return out

    def n_text(self, row: tuple) -> str:
        ns = sorted({c.n for (r, _, _), c in self.cells.items() if r == row})
        return "-" if not ns else str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"

    def frame(self):
        """A pandas DataFrame, one row per table row: ``<col>/<metric>_mean``, ``_std``, ``_n``."""
        import pandas as pd

        records = []
        for row in self.rows:
            rec = {"label": "/".join(row)}
            for col in self.cols:
                prefix = "/".join(col) + "/" if col else ""
                for m in self.metrics:
                    c = self.cell(row, col, m)
                    rec[f"{prefix}{m}_mean"] = c.mean if c else math.nan
                    rec[f"{prefix}{m}_std"] = c.std if c else math.nan
                    rec[f"{prefix}{m}_n"] = c.n if c else 0
            records.append(rec)
        if not records:  # no run finished (a sweep stopped early): an empty frame, not a KeyError
            return pd.DataFrame(columns=["label"]).set_index("label")
        return pd.DataFrame(records).set_index("label")


def check_metrics(metrics: list[str]) -> list[str]:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise UserError(f"Unknown metric(s) {', '.join(unknown)}; valid metrics are: {', '.join(METRICS)}.")
    return list(metrics)


def build(runs: list[Run], rows: list[str], cols: list[str] | None = None, metrics=DEFAULT_METRICS, ci: bool = False,
          title: str | None = None, row_of=None) -> Table:
    """Group finished runs into rows and columns; ``row_of(run)`` overrides the row key (a tuple)."""
    cols, metrics = list(cols or []), check_metrics(list(metrics))
    table = Table(list(rows), cols, metrics, ci=ci, title=title)
    groups: dict = {}
    for run in runs:
        if not run.finished:
            table.left_out.append(run)
            continue
        row = row_of(run) if row_of else tuple(_key(run, k) for k in rows)
        col = tuple(_key(run, k) for k in cols)
        groups.setdefault((row, col), []).append(run)
        if row not in table.rows:
            table.rows.append(row)
        if col not in table.cols:
            table.cols.append(col)
    for (row, col), members in groups.items():
        for m in metrics:
            mean, std, n = mean_std([r.metric(m) for r in members])
            if n:
                table.cells[(row, col, m)] = Cell(mean, std, n)
    return table


def _key(run: Run, key: str) -> str:
    value = run.value(key)
    if value is None:
        raise UserError(f"{run.path} has no '{key}' to group by; use a sweep axis name or a config key "
                        "such as strategy, benchmark, benchmark.scenario or train.lr.")
    return value


# -- formatting -------------------------------------------------------------------------------------

def fmt(cell: Cell | None, metric: str, ci: bool = False) -> str:
    if cell is None or not math.isfinite(cell.mean):
        return "-"
    digits = METRICS.get(metric, ("", 3, None))[1]
    if metric == "final_params":
        return f"{cell.mean:,.0f}" + (f" ± {cell.std:,.0f}" if cell.n > 1 and cell.std > 0 else "")
    text = f"{cell.mean:.{digits}f}"
    if cell.n > 1:
        text += f" ± {cell.std:.{digits}f}"
        if ci:
            text += f" [{cell.mean - cell.ci:.{digits}f}, {cell.mean + cell.ci:.{digits}f}]"
    return text


def _headers(table: Table) -> list[str]:
    out = []
    for col in table.cols:
        for m in table.metrics:
            title = METRICS[m][0]
            out.append(f"{'/'.join(col)} {title}" if col else title)
    return out


def _body(table: Table, bold) -> list[list[str]]:
    best = table.best()
    lines = []
    for row in table.rows:
        cells = []
        for col in table.cols:
            for m in table.metrics:
                text = fmt(table.cell(row, col, m), m, table.ci)
                cells.append(bold(text) if (row, col, m) in best and text != "-" else text)
        lines.append(["/".join(row), table.n_text(row), *cells])
    return lines


def footnote(table: Table) -> str:
    return FOOTNOTE.format(ci=", [95% t-interval of the mean]" if table.ci else "")


def left_out_lines(table: Table) -> list[str]:
    return [f"not averaged: {r.path} (status {r.status}" + (f": {r.data.get('reason')}" if r.data.get("reason") else "")
            + ")" for r in table.left_out]


def markdown(table: Table, notes: bool = True) -> str:
    head = ["/".join(table.row_keys) or "run", "n", *_headers(table)]
    lines = ["| " + " | ".join(head) + " |", "| --- | ---: |" + " ---: |" * (len(head) - 2)]
    lines += ["| " + " | ".join(cells) + " |" for cells in _body(table, lambda t: f"**{t}**")]
    if notes:
        lines += ["", footnote(table), *(f"- {line}" for line in left_out_lines(table))]
    return "\n".join(lines)


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("$", r"\$"),
                 ("{", r"\{"), ("}", r"\}")):
        text = text.replace(a, b)
    return text.replace("±", r"$\pm$").replace("–", "--")


def latex(table: Table) -> str:
    """A booktabs table: \\toprule / \\midrule / \\bottomrule, column groups under \\cmidrule."""
    n_metrics = len(table.metrics)
    spec = "l r " + " ".join("r" * n_metrics for _ in table.cols)
    lines = [r"\begin{table}[t]", r"\centering"]
    if table.title:
        lines.append(rf"\caption{{{_tex(table.title)}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if table.cols and any(table.cols[0]):
        groups = [rf"\multicolumn{{{n_metrics}}}{{c}}{{{_tex('/'.join(c))}}}" for c in table.cols]
        lines.append(" & & " + " & ".join(groups) + r" \\")
        rules = [rf"\cmidrule(lr){{{3 + i * n_metrics}-{2 + (i + 1) * n_metrics}}}" for i in range(len(table.cols))]
        lines.append(" ".join(rules))
    metric_titles = [_tex(METRICS[m][0]) for _ in table.cols for m in table.metrics]
    lines.append(" & ".join([_tex("/".join(table.row_keys) or "run"), "$n$", *metric_titles]) + r" \\")
    lines.append(r"\midrule")
    for cells in _body(table, lambda t: "**" + t + "**"):
        tex = [_tex(c) for c in cells]
        tex = [rf"\textbf{{{c[2:-2]}}}" if c.startswith("**") else c for c in tex]
        lines.append(" & ".join(tex) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", "", rf"\smallskip\footnotesize {_tex(footnote(table))}"]
    lines += [rf"% {line}" for line in left_out_lines(table)]
    lines.append(r"\end{table}")
    return "\n".join(lines)


def csv(table: Table) -> str:
    """Long format: one line per (row, column, metric) with mean, std, n, the CI half-width and best."""
    best = table.best()
    out = io.StringIO()
    w = _csv.writer(out, lineterminator="\n")
    w.writerow([*table.row_keys, *table.col_keys, "metric", "mean", "std", "n", "ci95", "best"])
    for row in table.rows:
        for col in table.cols:
            for m in table.metrics:
                c = table.cell(row, col, m)
                if c is None:
                    continue
                w.writerow([*row, *col, m, c.mean, "" if math.isnan(c.std) else c.std, c.n,
                            "" if math.isnan(c.ci) else c.ci, (row, col, m) in best])
    return out.getvalue()


def rich_table(table: Table):
    from rich.table import Table as RichTable

    out = RichTable(title=table.title, caption=footnote(table), caption_justify="left")
    out.add_column("/".join(table.row_keys) or "run")
    out.add_column("n", justify="right")
    for h in _headers(table):
        out.add_column(h, justify="right")
    for cells in _body(table, lambda t: f"[bold]{t}[/bold]"):
        out.add_row(*cells)
    return out


FORMATS = {"markdown": markdown, "latex": latex, "csv": csv}
EXTENSIONS = {"markdown": "md", "latex": "tex", "csv": "csv"}


def write_all(table: Table, folder) -> Path:
    """``table.md``, ``table.tex`` and ``table.csv`` in ``folder``; returns the markdown file."""
    for fmt, ext in EXTENSIONS.items():
        (Path(folder) / f"table.{ext}").write_text(FORMATS[fmt](table) + "\n")
    return Path(folder) / "table.md"


def console():
    """A rich Console that does not wrap paths or squeeze tables when output is piped."""
    import sys

    from rich.console import Console

    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def from_groups(groups: dict[str, list[dict]], metrics=DEFAULT_METRICS, title: str | None = None,
                row_key: str = "strategy") -> Table:
    """A table with one row per label from ``{label: [results.json data, ...]}`` (the experiment scripts)."""
    runs, label_of = [], {}
    for label, items in groups.items():
        for data in items:
            run = Run(Path(str(data.get("name", label))), data)
            label_of[id(run)] = (label,)
            runs.append(run)
    return build(runs, [row_key], [], metrics, title=title, row_of=lambda r: label_of[id(r)])
