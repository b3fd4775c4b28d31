"""Dark Experience Replay: DER and DER++ (Buzzega et al. 2020).

The memory stores, with each sample, the logits the net gave it when it was stored; replaying
matches them (dark knowledge) and, for DER++, the labels too:

    L = CE(z_cur, y_cur) + alpha * MSE(z_mem, z_stored) + beta * CE(z_mem, y_mem)

``beta: null`` is DER (no label term). As Avalanche's ``DER``: a class-balanced memory updated
after each experience with the logits of the net that just learned it (eval mode), one memory
batch per step for both replay terms, replay once the memory holds ``mem_batch_size`` samples.

Stored logits follow morphs (``LogitMemory.remap``): when ``extend_classes`` appends class
outputs, or ``add_head`` appends a task head, the stored logits keep their columns and the
new ones are masked out of the MSE (they had no value when the sample was stored), so the
replay loss right after a function-preserving morph equals the loss right before it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neumeta_cl.errors import ConfigError
from neumeta_cl.morph.param_map import gather
from neumeta_cl.strategies.base import ContinualModule
from neumeta_cl.strategies.buffer import ReplayBuffer
from neumeta_cl.strategies.optim import OptimConfig
from neumeta_cl.strategies.replay import check_mem_batch_size


def dark_replay_loss(z_mem: torch.Tensor, stored: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the net's logits and the stored ones, over the stored columns."""
    z = z_mem[:, : stored.shape[1]]
    return F.mse_loss(z[mask], stored[mask])


def der_loss(z_cur, y_cur, z_mem, y_mem, stored, mask, alpha: float, beta: float | None) -> torch.Tensor:
    """CE(z_cur, y_cur) + alpha * MSE(z_mem, stored) [+ beta * CE(z_mem, y_mem), DER++]."""
    loss = F.cross_entropy(z_cur, y_cur) + alpha * dark_replay_loss(z_mem, stored, mask)
    if beta is not None:
        loss = loss + beta * F.cross_entropy(z_mem, y_mem)
    return loss


@torch.no_grad()
def net_logits(net, x: torch.Tensor, t: torch.Tensor, batch_size: int) -> torch.Tensor:
    was_training = net.training
    net.eval()
    out = torch.cat([net(x[i: i + batch_size], t[i: i + batch_size]) for i in range(0, len(x), batch_size)])
    net.train(was_training)
    return out


def head_columns(param_map, task: int) -> torch.Tensor | None:
    """New output column j of task ``task``'s head <- old column index[j] (-1: new); None: unchanged."""
    for name in ("head.linear.weight", f"head.heads.{task}.weight"):
        rule = param_map.rules.get(name)
        if rule is not None and rule.source == name:
            return rule.dims[0].index if 0 in rule.dims else None
    return None


class LogitMemory(ReplayBuffer):
    """The shared buffer with two extra fields per row: ``logits`` and ``mask`` (the columns they cover)."""

    def __init__(self, size: int, policy: str = "class_balanced", seed: int = 0, batch_size: int = 128):
        super().__init__(size, policy, seed, when=None)
        self.batch_size = batch_size

    def after_training(self, run) -> None:
        exp = run.experience
        logits = net_logits(run.strategy.net, exp.x.to(run.device), exp.t.to(run.device), self.batch_size).cpu()
        mask = torch.isfinite(logits)  # a multi-head net pads smaller heads with -inf
        logits = torch.where(mask, logits, torch.zeros_like(logits))
        if self.data:  # rows of every experience share one width: pad the narrower side
            width = max(logits.shape[1], self.data["logits"].shape[1])
            logits, mask = pad(logits, width), pad(mask, width)
            self.data["logits"], self.data["mask"] = pad(self.data["logits"], width), pad(self.data["mask"], width)
        self.update(exp, {"logits": logits, "mask": mask})

    def remap(self, param_map) -> None:
        if not self.data:
            return
        logits, mask, t = self.data["logits"], self.data["mask"], self.data["t"]
        maps = {task: head_columns(param_map, task) for task in t.unique().tolist()}
        if all(m is None for m in maps.values()):
            return
        width = max([logits.shape[1]] + [len(m) for m in maps.values() if m is not None])
        new_logits, new_mask = pad(logits, width), pad(mask, width)
        for task, index in maps.items():
            if index is None:
                continue
            rows = t == task
            new_logits[rows] = pad(gather(logits[rows], 1, index), width)
            new_mask[rows] = pad(gather(mask[rows], 1, index) & (index >= 0), width)
        self.data["logits"], self.data["mask"] = new_logits, new_mask


def pad(a: torch.Tensor, width: int) -> torch.Tensor:
    """Columns appended up to ``width`` (zeros / False)."""
    return a if a.shape[1] >= width else torch.cat([a, a.new_zeros(a.shape[0], width - a.shape[1])], dim=1)


class DER(ContinualModule):
    def __init__(self, net, optim: OptimConfig, *, batch_size: int = 128, seed: int = 0, buffer_size: int = 500,
                 alpha: float = 0.1, beta: float | None = 0.5, policy: str = "class_balanced",
                 mem_batch_size: int | None = None):
        if not alpha > 0:
            raise ConfigError(f"strategy.alpha must be positive, got {alpha}; set it with strategy.alpha=<positive number>.")
        if beta is not None and not beta > 0:
            raise ConfigError(f"strategy.beta must be positive, got {beta}; set strategy.beta=null for DER without "
                              f"the label term, or a positive number for DER++.")
        self.buffer = LogitMemory(buffer_size, policy, seed, batch_size)
        super().__init__(net, optim, batch_size=batch_size, seed=seed, parts=[self.buffer])
        self.alpha, self.beta = alpha, beta
        self.mem_batch_size = mem_batch_size or batch_size
        check_mem_batch_size(self.mem_batch_size)
        self._stored = None

    def training_batch(self, batch):
        self._stored = None
        if len(self.buffer) < self.mem_batch_size:
            return batch
        x, y, t = batch
        mx, my, mt, logits, mask = self.buffer.sample(self.mem_batch_size, x.device, ("x", "y", "t", "logits", "mask"))
        self._stored = (logits, mask)
        return torch.cat([x, mx]), torch.cat([y, my]), torch.cat([t, mt])

    def criterion(self, logits, y, n_current):
        if self._stored is None:
            return F.cross_entropy(logits, y)
        stored, mask = self._stored
        return der_loss(logits[:n_current], y[:n_current], logits[n_current:], y[n_current:], stored, mask,
                        self.alpha, self.beta)
