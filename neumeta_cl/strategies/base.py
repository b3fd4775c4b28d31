"""The LightningModule every strategy is: a morphable net, a loss, and the plugins it is built from.

A strategy is a ``ContinualModule`` plus a few plugins (``neumeta_cl.protocol.Plugin``): EWC's
penalty, LwF's distillation, a replay buffer. They see the experience boundaries through the loop's
events and add to the loss through ``Plugin.loss``; none of them owns a training loop.
"""

from __future__ import annotations

import math
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from neumeta_cl.data import TensorExperience
from neumeta_cl.errors import TrainingDiverged
from neumeta_cl.nets.structure import load_net, net_state
from neumeta_cl.protocol import Plugin, RunSettings, StrategyReport, load_state_of, state_of
from neumeta_cl.strategies.optim import OptimConfig


class ContinualModule(pl.LightningModule):
    """Fine-tunes ``net`` on the current experience with cross-entropy plus its plugins' losses.

    Implements ``neumeta_cl.protocol.Strategy``. ``net(x, t)`` returns logits; ``t`` holds task
    labels (used by multi-head nets only). The optimizer is built afresh for every
    ``Trainer.fit``, so after a morph replaces parameters the next experience optimises the new
    ones, and nothing of the optimizer outlives an experience (a checkpoint needs none of it).

    Optimization is manual (one backward, then ``Plugin.after_backward``, then one step): CL
    methods routinely edit gradients between the two (masks, projections), and it skips
    Lightning's closure machinery, which is most of its per-step overhead.
    """

    def __init__(self, net: nn.Module, optim: OptimConfig, *, batch_size: int = 128, seed: int = 0,
                 parts: list[Plugin] | None = None):
        super().__init__()
        self.net = net
        self.optim = optim
        self.batch_size = batch_size
        self.seed = seed
        self.parts: list[Plugin] = list(parts or [])  # the plugins this strategy is built from
        self.experience_index = -1
        self.automatic_optimization = False

    # -- the protocol (called by the loop, outside Trainer.fit) -------------------------------
    def train_data(self, stream, index: int) -> TensorExperience:
        """The data trained on at experience ``index``: the new experience only (``joint`` overrides)."""
        return stream.train[index]

    def plugins(self, settings: RunSettings) -> list[Plugin]:
        """The plugins this strategy brings to the run; subclasses add run-level ones (a width sweep)."""
        return list(self.parts)

    def before_experience(self, experience: TensorExperience) -> None:
        self.experience_index = experience.index

    def epochs(self, configured: int) -> int:
        """Epochs over ``train_data`` in this experience: ``train.epochs``, unless the strategy trains
        a data set of its own for its own count (GDumb: its small memory, from scratch)."""
        return configured

    def train_batch_size(self, configured: int) -> int:
        """Batch size of those epochs: ``train.batch_size`` unless the strategy sets its own."""
        return configured

    def after_training(self, experience: TensorExperience) -> None:
        """Consolidation of the strategy itself, after its plugins' ``after_training``."""

    def report(self) -> StrategyReport:
        """What the strategy did in the experience just finished (recorded in results.json)."""
        return StrategyReport()

    def replace_net(self, net: nn.Module, param_map=None) -> None:
        """Adopt a morphed net; every plugin's per-parameter state follows the morph."""
        self.net = net
        if param_map is not None:
            for part in self.parts:
                part.remap(param_map)

    # -- state -----------------------------------------------------------------------------------
    def net_state(self) -> dict:
        return net_state(self.net)

    def load_net_state(self, state: dict) -> None:
        self.net = load_net(state)

    def extra_state(self) -> dict:
        """State a subclass owns beyond the net and the plugins (random generators, targets)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def state_dict(self, *args, **kwargs) -> dict:  # plain data; see neumeta_cl.protocol
        if args or kwargs:  # torch's own recursion into a parent module: the ordinary tensor dict
            return super().state_dict(*args, **kwargs)
        return {"net": self.net_state(), "plugins": state_of(self.parts), "experience_index": self.experience_index,
                "extra": self.extra_state()}

    def load_state_dict(self, state: dict, strict: bool = True, assign: bool = False):
        self.load_net_state(state["net"])
        load_state_of(self.parts, state["plugins"])
        self.experience_index = state["experience_index"]
        self.load_extra_state(state["extra"])

    # -- training ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, t)

    def training_batch(self, batch):
        """The batch the loss is computed on; replay appends buffered samples here (after the
        current ones, so ``criterion`` can tell them apart)."""
        return batch

    def criterion(self, logits: torch.Tensor, y: torch.Tensor, n_current: int) -> torch.Tensor:
        """The data term: cross-entropy over the whole batch. ``logits[:n_current]`` are the current
        experience's samples, the rest came from a memory (ER-ACE and DER weigh them apart)."""
        return F.cross_entropy(logits, y)

    def compute_loss(self, batch) -> torch.Tensor:
        """``criterion`` on the (possibly extended) batch plus every plugin's loss term."""
        n_current = len(batch[0])
        x, y, t = self.training_batch(batch)
        logits = self.net(x, t)
        loss = self.criterion(logits, y, n_current)
        for part in self.parts:
            loss = loss + part.loss(self, x, t, logits)
        return loss

    def training_step(self, batch, batch_idx):
        loss = self.compute_loss(batch)
        if not math.isfinite(loss.item()):
            raise TrainingDiverged(
                f"The training loss became {loss.item()} at experience {self.experience_index}, "
                f"step {self.global_step}; lower train.lr (this experience's rate: "
                f"{self.optim.for_experience(self.experience_index).lr}) or check the inputs."
            )
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        for part in self.parts:
            part.after_backward(self)
        opt.step()
        for part in self.parts:
            part.after_step(self)
        schedule = self.lr_schedulers()
        if schedule is not None:  # manual optimization: Lightning leaves the stepping to us
            schedule.step()
        if self.trainer.progress_bar_callback is not None:  # the loss on the bar, when there is one
            self.log("loss", loss, prog_bar=True, logger=False)
        return loss.detach()

    def configure_optimizers(self):
        optim = self.optim.for_experience(self.experience_index)
        opt = optim.build([p for p in self.net.parameters() if p.requires_grad])
        schedule = optim.scheduler(opt, int(self.trainer.estimated_stepping_batches))
        return opt if schedule is None else {"optimizer": opt, "lr_scheduler": schedule}
