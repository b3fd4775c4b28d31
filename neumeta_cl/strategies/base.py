"""The LightningModule every strategy is: a morphable net, a loss, and composable pieces.

A strategy is a ``ContinualModule`` plus a few *pieces* (EWC's penalty, LwF's distillation, a
replay buffer). Pieces see the experience boundaries through ``before_experience`` /
``after_experience`` and add to the loss through ``penalty``; none of them owns a training loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from neumeta_cl.data import TensorExperience
from neumeta_cl.errors import ConfigError, TrainingDiverged


class Piece:
    """A composable part of a strategy. Override only what you need."""

    def before_experience(self, module: "ContinualModule", experience: TensorExperience) -> None:
        pass

    def penalty(self, module: "ContinualModule", x: torch.Tensor, t: torch.Tensor, logits: torch.Tensor):
        return 0.0

    def after_backward(self, module: "ContinualModule") -> None:
        """Gradients are in ``p.grad`` and the optimizer has not stepped: mask or project them here."""

    def after_step(self, module: "ContinualModule") -> None:
        """The optimizer has stepped: restore frozen values, clip weights, update running statistics."""

    def after_experience(self, module: "ContinualModule", experience: TensorExperience) -> None:
        pass


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0

    def build(self, params) -> torch.optim.Optimizer:
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        if self.name == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        raise ConfigError(f"Unknown optimizer '{self.name}'; valid optimizers are: adam, sgd.")


class ContinualModule(pl.LightningModule):
    """Fine-tunes ``net`` on the current experience with cross-entropy plus the pieces' penalties.

    ``net(x, t)`` returns logits; ``t`` holds task labels (used by multi-head nets only). The
    optimizer is built afresh for every ``Trainer.fit``, so after a morph replaces parameters the
    next experience optimises the new ones.

    Optimization is manual (one backward, then ``Piece.after_backward``, then one step): CL methods
    routinely edit gradients between the two (masks, projections), and it skips Lightning's
    closure machinery, which is most of its per-step overhead.
    """

    def __init__(self, net: nn.Module, optim: OptimConfig, *, batch_size: int = 128, seed: int = 0,
                 pieces: list[Piece] | None = None):
        super().__init__()
        self.net = net
        self.optim = optim
        self.batch_size = batch_size
        self.seed = seed
        self.pieces: list[Piece] = list(pieces or [])
        self.experience_index = -1
        self.show_progress = True  # the loss on Lightning's progress bar (off when no bar is shown)
        self.automatic_optimization = False
        self.morph_policy = None  # plans morphs between experiences (see neumeta_cl.callbacks)

    # -- experience boundaries (called by the runner, outside Trainer.fit) --------------------
    def train_experience(self, stream, index: int) -> TensorExperience:
        """The data trained on at experience ``index``: the new experience only (``joint`` overrides)."""
        return stream.train[index]

    def before_experience(self, experience: TensorExperience) -> None:
        self.experience_index = experience.index
        for piece in self.pieces:
            piece.before_experience(self, experience)

    def after_experience(self, experience: TensorExperience) -> None:
        for piece in self.pieces:
            piece.after_experience(self, experience)

    def experience_info(self) -> dict:
        """What the strategy did at the end of the experience (recorded in results.json)."""
        return {}

    # -- training ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, t)

    def training_batch(self, batch):
        """The batch the loss is computed on; replay appends buffered samples here."""
        return batch

    def experience_hooks(self, run_dir=None) -> list:
        """Experience hooks the strategy brings to the runner (e.g. NeuMeta's width sweep); files
        they write go to ``run_dir``."""
        return []

    def compute_loss(self, batch) -> torch.Tensor:
        """Cross-entropy on the (possibly extended) batch plus every piece's penalty."""
        x, y, t = self.training_batch(batch)
        logits = self.net(x, t)
        loss = F.cross_entropy(logits, y)
        for piece in self.pieces:
            loss = loss + piece.penalty(self, x, t, logits)
        return loss

    def training_step(self, batch, batch_idx):
        loss = self.compute_loss(batch)
        if not math.isfinite(loss.item()):
            raise TrainingDiverged(
                f"The training loss became {loss.item()} at experience {self.experience_index}, "
                f"step {self.global_step}; lower train.lr (now {self.optim.lr}) or check the inputs."
            )
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        for piece in self.pieces:
            piece.after_backward(self)
        opt.step()
        for piece in self.pieces:
            piece.after_step(self)
        if self.show_progress:
            self.log("loss", loss, prog_bar=True, logger=False)
        return loss.detach()

    def configure_optimizers(self):
        return self.optim.build([p for p in self.net.parameters() if p.requires_grad])
