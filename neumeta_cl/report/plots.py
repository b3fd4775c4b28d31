"""Plots from results.json files (never from W&B): what a paper's figures show about a CL run.

- ``heatmap``: R (accuracy on experience j after training on experience i), one panel per group,
  the mean over its seeds;
- ``stream``: the accuracy on each experience along the stream, one line per group with a band
  of ± one sample std over seeds;
- ``size``: parameters and FLOPs per sample along the stream, one line per group, morphs marked;
- ``width``: NeuMeta's accuracy on the seen experiences against width, one line per experience.

Each kind is written as PNG and PDF; ``log_wandb`` adds the PNG to every run's W&B run as an image.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from neumeta_cl.errors import UserError  # noqa: E402
from neumeta_cl.report.runs import Run  # noqa: E402

KINDS = ("heatmap", "stream", "size", "width")
_COLOURS = plt.get_cmap("tab10").colors
_DASHES = ("-", "--", ":", "-.")


def line_styles(n: int) -> list[dict]:
    """Plot keywords for ``n`` lines, no two alike: the 10 tab10 colours with solid lines, then the
    same colours dashed, dotted, dash-dotted (Table 1 has 17 strategies; matplotlib's own cycle
    repeats its colours after 10, so two strategies would share a line)."""
    return [{"color": _COLOURS[i % 10], "ls": _DASHES[i // 10 % len(_DASHES)]} for i in range(n)]


def _groups(runs: list[Run], by: str) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in runs:
        if r.finished:
            out.setdefault(str(r.value(by)), []).append(r)
    if not out:
        raise UserError("No finished runs to plot; `neumeta-cl table` lists the unfinished ones.")
    return out


def mean_matrix(runs: list[Run]) -> np.ndarray:
    """The mean R over runs (they must share the stream's length)."""
    shapes = {np.shape(r.data["R"]) for r in runs}
    if len(shapes) > 1:
        raise UserError(f"Runs of one group have streams of different lengths {sorted(shapes)}; group by benchmark too.")
    return np.mean([np.asarray(r.data["R"], dtype=float) for r in runs], axis=0)


def _grid(n: int, size=(3.6, 3.3)):
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def heatmap(groups: dict[str, list[Run]]):
    fig, axes = _grid(len(groups))
    for ax, (name, runs) in zip(axes, groups.items()):
        R = mean_matrix(runs)
        im = ax.imshow(R, vmin=0, vmax=1, cmap="viridis")
        T = len(R)
        if T <= 10:
            for i in range(T):
                for j in range(T):
                    ax.text(j, i, f"{R[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if R[i, j] < 0.6 else "black")
        ax.set_title(f"{name} (n={len(runs)})", fontsize=10)
        ax.set_xlabel("evaluated on experience j")
        ax.set_ylabel("after training on i")
        ax.set_xticks(range(T))
        ax.set_yticks(range(T))
    fig.colorbar(im, ax=axes, shrink=0.8, label="accuracy")
    fig.suptitle("Accuracy matrix R (mean over seeds)")
    return fig


def stream(groups: dict[str, list[Run]]):
    T = max(len(r.data["R"]) for rs in groups.values() for r in rs)
    fig, axes = _grid(T + 1, size=(3.4, 2.6))
    x = np.arange(T)
    for (name, runs), style in zip(groups.items(), line_styles(len(groups))):
        Rs = np.asarray([r.data["R"] for r in runs], dtype=float)  # runs x T x T
        panels = [Rs[:, :, j] for j in range(T)] + [np.asarray([[np.mean(R[i, : i + 1]) for i in range(T)] for R in Rs])]
        for ax, acc in zip(axes, panels):
            mean = acc.mean(axis=0)
            line, = ax.plot(x, mean, marker="o", ms=3, label=name, **style)
            if len(runs) > 1:
                std = acc.std(axis=0, ddof=1)
                ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    for j, ax in enumerate(axes):
        ax.set_title(f"experience {j}" if j < T else "mean over seen experiences", fontsize=10)
        if j < T:
            ax.axvline(j, color="grey", lw=0.8, ls=":")
        ax.set_ylim(0, 1.02)
        ax.set_xticks(x)
        ax.set_xlabel("after training on experience")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    fig.suptitle("Accuracy on each experience along the stream (band: ± 1 sample std over seeds)")
    return fig


def _sizes(run: Run) -> tuple[list[int], list[float | None], list[int]]:
    exps = run.data["experiences"]
    params = [e["parameters"] for e in exps]
    flops = [e.get("flops") for e in exps]
    morphs = [e["index"] for e in exps if e.get("morphs") or e.get("strategy_morphs")]
    return params, flops, morphs


def size(groups: dict[str, list[Run]]):
    fig, (ax_p, ax_f) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    any_flops = False
    for (name, runs), style in zip(groups.items(), line_styles(len(groups))):
        params, flops, morphs = _sizes(runs[0])  # sizes do not depend on the seed
        x = np.arange(len(params))
        line, = ax_p.plot(x, params, marker="o", ms=3, label=name, **style)
        if any(f is not None for f in flops):
            any_flops = True
            ax_f.plot(x, [np.nan if f is None else f for f in flops], marker="o", ms=3, label=name, **style)
        for m in morphs:
            for ax, ys in ((ax_p, params), (ax_f, flops)):
                if ys[m] is not None:
                    ax.plot(m, ys[m], marker="*", ms=12, color=line.get_color(), zorder=3)
    T = max(len(rs[0].data["experiences"]) for rs in groups.values())
    for ax, what in ((ax_p, "parameters"), (ax_f, "FLOPs per sample")):
        ax.set_xlabel("after training on experience")
        ax.set_ylabel(what)
        ax.set_xticks(range(T))
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 4))
    if not any_flops:
        ax_f.text(0.5, 0.5, "not recorded by these runs", ha="center", va="center", transform=ax_f.transAxes)
    handles, labels = ax_p.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    fig.suptitle("Network size along the stream (★: a morph at that experience)")
    return fig


def width(groups: dict[str, list[Run]]):
    with_widths = {n: rs for n, rs in groups.items() if any(e.get("widths_eval") for e in rs[0].data["experiences"])}
    if not with_widths:
        return None
    fig, axes = _grid(len(with_widths), size=(4.2, 3.2))
    for ax, (name, runs) in zip(axes, with_widths.items()):
        T = len(runs[0].data["experiences"])
        for i, style in zip(range(T), line_styles(T)):
            rows = [r.data["experiences"][i].get("widths_eval") or [] for r in runs]
            if not rows[0]:
                continue
            fr = [row["fraction"] for row in rows[0]]
            acc = np.asarray([[row["acc_seen"] for row in rs] for rs in rows])
            line, = ax.plot(fr, acc.mean(axis=0), marker="o", ms=3, label=f"after experience {i}", **style)
            for f, row in zip(fr, rows[0]):
                if row.get("unseen"):
                    ax.plot(f, acc.mean(axis=0)[fr.index(f)], marker="s", mfc="none", ms=8, color=line.get_color())
        ax.set_title(f"{name} (n={len(runs)})", fontsize=10)
        ax.set_xlabel("width (fraction of full)")
        ax.set_ylabel("accuracy on seen experiences")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("NeuMeta: accuracy against width (□: a width never trained)")
    return fig


DRAW = {"heatmap": heatmap, "stream": stream, "size": size, "width": width}


def plot_all(runs: list[Run], by: str, kinds: list[str], out: str | Path, log_wandb: bool = False) -> list[Path]:
    unknown = [k for k in kinds if k not in DRAW]
    if unknown:
        raise UserError(f"Unknown plot kind(s) {', '.join(unknown)}; valid kinds are: {', '.join(KINDS)}.")
    groups = _groups(runs, by)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in kinds:
        fig = DRAW[kind](groups)
        if fig is None:
            continue
        for ext in ("png", "pdf"):
            path = out / f"{kind}.{ext}"
            fig.savefig(path, dpi=130, bbox_inches="tight")
            written.append(path)
        plt.close(fig)
    if log_wandb:
        _log_to_wandb(runs, [p for p in written if p.suffix == ".png"])
    return written


def _log_to_wandb(runs: list[Run], pngs: list[Path]) -> None:
    """Add the plots to each run's own W&B run (same id, resumed), offline or online as it was logged."""
    import wandb

    for r in runs:
        run_id, cfg = r.data.get("wandb_id"), (r.data.get("config") or {}).get("logger") or {}
        if not run_id or cfg.get("mode") == "disabled":
            continue
        with wandb.init(id=run_id, resume="allow", project=cfg.get("project"), entity=cfg.get("entity"),
                        mode=cfg.get("mode", "offline"), dir=str(r.path.parent), settings=wandb.Settings(silent=True)) as w:
            w.log({f"plots/{p.stem}": wandb.Image(str(p)) for p in pngs})
