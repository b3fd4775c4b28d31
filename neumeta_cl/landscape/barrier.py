"""Loss barriers along a path (Frankle et al., ICML 2020), and the profile they are read from.

    loss_barrier = max_t L(phi(t)) - (L(A) + L(B)) / 2          over n evenly spaced t in [0, 1]

(Frankle et al. use the same definition with error instead of loss.) The profile also holds each
task's accuracy along t, so a barrier between the solutions of two experiences shows which task
the middle of the path serves. Nets with BatchNorm are evaluated with their running statistics
recomputed at every t (``bn_data``); ``repair`` (``landscape.repair``) applies REPAIR at every t.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neumeta_cl.landscape.path import Path
from neumeta_cl.landscape.repair import repair as repair_net
from neumeta_cl.morph.report import mode


@torch.no_grad()
def loss_and_accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None = None,
                      batch_size: int = 2048) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``net`` (eval mode) on (x, y, t)."""
    t = t if t is not None else torch.zeros(len(x), dtype=torch.long, device=x.device)
    loss, correct = 0.0, 0
    with mode(net, False):
        for s in range(0, len(x), batch_size):
            logits = net(x[s:s + batch_size], t[s:s + batch_size])
            loss += float(F.cross_entropy(logits, y[s:s + batch_size], reduction="sum"))
            correct += int((logits.argmax(1) == y[s:s + batch_size]).sum())
    return loss / len(y), correct / len(y)


def loss_barrier(losses) -> float:
    """max_t L(t) - (L(0) + L(1)) / 2, from losses at evenly spaced t (first and last are the ends)."""
    losses = np.asarray(losses, dtype=float)
    return float(losses.max() - (losses[0] + losses[-1]) / 2)


@dataclass
class PathProfile:
    label: str
    ts: list[float]
    loss: list[float]  # on the loss data
    accuracy: dict[str, list[float]] = field(default_factory=dict)  # task name -> accuracy along t
    barrier: float = 0.0
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_path(path: Path, data, n: int = 25, tasks: dict | None = None, bn_data=None, repair_data=None,
                  label: str | None = None) -> PathProfile:
    """Loss on ``data`` = (x, y, t) and accuracy on each of ``tasks`` (name -> (x, y, t)) at n points of t.

    ``bn_data``: recompute BatchNorm statistics there at every t; ``repair_data``: apply REPAIR at every
    t (the endpoints' unit statistics on that data; includes the BatchNorm reset)."""
    if n < 2:
        raise ValueError("a barrier needs at least the two endpoints (n >= 2)")
    ts = [float(v) for v in np.linspace(0.0, 1.0, n)]
    tasks = tasks or {}
    losses, accs = [], {k: [] for k in tasks}
    a_net = b_net = None
    if repair_data is not None:
        a_net, b_net = path.net(0.0, bn_data), path.net(1.0, bn_data)
    for t in ts:
        net = path.net(t, bn_data)
        if repair_data is not None and 0.0 < t < 1.0:
            net = repair_net(net, a_net, b_net, t, repair_data)
        losses.append(loss_and_accuracy(net, *data)[0])
        for k, task in tasks.items():
            accs[k].append(loss_and_accuracy(net, *task)[1])
    return PathProfile(label or path.name, ts, losses, accs, loss_barrier(losses), path.describe())


def plot_profiles(profiles: list[PathProfile], file, title: str = "") -> None:
    """Loss along t for every profile (left) and each task's accuracy (right), one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_acc = any(p.accuracy for p in profiles)
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(11 if has_acc else 6, 4), squeeze=False)
    ax = axes[0, 0]
    for p in profiles:
        ax.plot(p.ts, p.loss, marker=".", label=f"{p.label} (barrier {p.barrier:.3g})")
    ax.set_xlabel("t (0 = A, 1 = B)")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if has_acc:
        ax = axes[0, 1]
        for p in profiles:
            for task, acc in p.accuracy.items():
                ax.plot(p.ts, acc, marker=".", label=f"{p.label}: {task}")
        ax.set_xlabel("t (0 = A, 1 = B)")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(file, dpi=110)
    plt.close(fig)


__all__ = ["loss_and_accuracy", "loss_barrier", "PathProfile", "evaluate_path", "plot_profiles"]
