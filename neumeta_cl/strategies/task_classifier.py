"""The task classifier of class-incremental NeuMeta: which experience does an input come from?

One ordinary network of the target family (BatchNorm-free) over all classes, trained on the
current experience and a small memory with ER-ACE's loss (Caccia et al. 2022), and slimmable
(``hypernet.slimmable``): every step trains the full, the narrowest and a random training width
together (the sandwich rule), so it answers at every width the generator serves; with ``distill``
> 0 the narrower two also learn the full width's predictions (inplace distillation, Yu & Huang
2019, US-Nets). After each
experience ``measure_widths`` gives every width its BatchNorm statistics and class offsets.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from neumeta_cl.hypernet.layout import TargetLayout  # noqa: F401  (type of self.layout)
from neumeta_cl.hypernet.routing import fit_class_offsets
from neumeta_cl.hypernet.slimmable import (STATISTICS, batchnorm_statistics, has_batchnorm, narrowed, pool_size,
                                           slice_state)
from neumeta_cl.runner.checkpoint import python_rng_state, set_python_rng_state
from neumeta_cl.strategies.er_ace import ERACE
from neumeta_cl.strategies.optim import OptimConfig


class SlimmableTaskClassifier(ERACE):
    """ER-ACE on one slimmable network; ``train_widths`` are the widths the sandwich rule draws from
    (the generator's training widths)."""

    def __init__(self, net: nn.Module, layout: TargetLayout, optim: OptimConfig, train_widths: list[tuple[int, ...]],
                 *, batch_size: int, seed: int, buffer_size: int, mem_batch_size: int | None, distill: float = 0.0):
        super().__init__(net, optim, batch_size=batch_size, seed=seed, buffer_size=buffer_size,
                         mem_batch_size=mem_batch_size)
        self.layout, self.n_classes = layout, net.head.linear.out_features
        self.train_widths = list(train_widths)
        self.distill = distill
        self.rng = random.Random(seed)
        self._shells: dict[tuple, nn.Module] = {}

    def logits_at(self, widths, x: torch.Tensor) -> torch.Tensor:
        widths = tuple(widths)
        if widths not in self._shells:
            shell = self.layout.build(widths, self.n_classes, batchnorm=has_batchnorm(self.net),
                                      pool_size=pool_size(self.net))
            self._shells[widths] = shell.to(x.device)
        state = slice_state({**dict(self.net.named_parameters()), **dict(self.net.named_buffers())}, widths)
        # BatchNorm normalises with the batch's statistics here; the running ones it would update
        # are throwaway copies (each width's are measured after training: hypernet.slimmable).
        state = {k: v.clone() if k.endswith(STATISTICS) else v for k, v in state.items()}
        return functional_call(self._shells[widths], state, (x,))

    def compute_loss(self, batch) -> torch.Tensor:
        """ER-ACE's loss at the full, the narrowest and a random training width (sandwich rule), plus
        ``distill`` times the KL divergence of each narrower width from the full width's softmax
        (which takes no gradient from it)."""
        n_current = len(batch[0])
        x, y, _ = self.training_batch(batch)
        full = self.logits_at(self.layout.widths, x)
        loss = self.criterion(full, y, n_current)
        teacher = full.detach().log_softmax(1) if self.distill else None
        for w in (self.train_widths[0], self.rng.choice(self.train_widths)):
            logits = self.logits_at(w, x)
            loss = loss + self.criterion(logits, y, n_current)
            if self.distill:
                loss = loss + self.distill * distillation(logits, teacher)
        return loss

    def extra_state(self) -> dict:
        return {"rng": python_rng_state(self.rng)}

    def load_extra_state(self, state: dict) -> None:
        set_python_rng_state(state["rng"], self.rng)


def distillation(logits: torch.Tensor, teacher_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) over all classes, averaged over the batch."""
    return F.kl_div(logits.log_softmax(1), teacher_log_probs, log_target=True, reduction="batchmean")


@torch.no_grad()
def measure_widths(layout: TargetLayout, net: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   classes) -> dict[tuple, dict]:
    """For every uniformly scaled width, on the memory ``(x, y)``: the slimmable classifier's
    BatchNorm statistics (US-Nets' calibration), then one offset per seen class (``classes[k]``: task
    ``k``'s classes) added to its head's bias (``hypernet.routing.fit_class_offsets``). The
    values ``narrowed`` puts in place of the shared ones, per width."""
    top = layout.widths[0]
    state = {}
    for w in sorted({layout.at_fraction(k / top) for k in range(1, top + 1)}):
        measured = batchnorm_statistics(layout, net, w, x) if has_batchnorm(net) else {}
        small = narrowed(layout, net, w, measured)
        logits = torch.cat([small(x[s: s + 1024]) for s in range(0, len(x), 1024)])
        with torch.enable_grad():
            offsets = fit_class_offsets(logits, y, classes)
        measured["head.linear.bias"] = small.head.linear.bias + offsets
        state[w] = measured
    return state
