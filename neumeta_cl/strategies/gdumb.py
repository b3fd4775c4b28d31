"""GDumb (Prabhu, Torr & Dokania 2020): a greedy class-balanced memory, and a net trained on it alone.

At each experience the memory takes the new samples with GDumb's greedy class-balancing sampler
(``strategies.buffer``, policy ``greedy_class_balanced``), the net is reset to its initial
weights, and it trains from scratch for ``epochs`` epochs on the memory only. GDumb is the
sanity baseline: a continual method that does not beat it is not using the stream.

Against Avalanche's ``GDumb``: Avalanche fills the memory with its class-balanced reservoir
(``ClassBalancedBuffer``), not the paper's sampler; on class-incremental streams both hold a
uniform sample of each class (``policy=class_balanced`` gives Avalanche's exactly).

Morphs: the initial weights are carried through every morph like an anchor (``ParamMap``), so
"from scratch" means the initial weights of the morphed structure; new units keep their values
from the morph.
"""

from __future__ import annotations

import torch

from neumeta_cl.errors import ConfigError
from neumeta_cl.protocol import Plugin
from neumeta_cl.strategies.base import ContinualModule
from neumeta_cl.strategies.buffer import ReplayBuffer
from neumeta_cl.strategies.optim import OptimConfig


class ResetToInit(Plugin):
    """Before each experience trains, load the weights the net had before its first experience."""

    def __init__(self):
        self.init: dict[str, torch.Tensor] | None = None

    def before_experience(self, run) -> None:
        net = run.strategy.net
        if self.init is None:
            self.init = {n: p.detach().cpu().clone() for n, p in net.named_parameters()}
            return
        with torch.no_grad():
            for n, p in net.named_parameters():
                if n in self.init and self.init[n].shape == p.shape:
                    p.copy_(self.init[n])

    def remap(self, param_map) -> None:
        if self.init is not None:
            self.init = param_map.remap_anchor(self.init)

    def state_dict(self) -> dict:
        return {"init": self.init}

    def load_state_dict(self, state: dict) -> None:
        self.init = state["init"]


class GDumb(ContinualModule):
    def __init__(self, net, optim: OptimConfig, *, batch_size: int = 128, seed: int = 0, buffer_size: int = 500,
                 epochs: int = 30, policy: str = "greedy_class_balanced"):
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
            raise ConfigError(f"strategy.epochs must be a positive integer, got {epochs!r}.")
        self.buffer = ReplayBuffer(buffer_size, policy, seed, when=None)
        super().__init__(net, optim, batch_size=batch_size, seed=seed, parts=[self.buffer, ResetToInit()])
        self.memory_epochs = epochs
        self._memory_of = -1  # the experience the memory last took in (train_data may be asked twice)

    def train_data(self, stream, index: int):
        if self._memory_of != index:
            self.buffer.update(stream.train[index])
            self._memory_of = index
        return self.buffer.as_experience(index)

    def epochs(self, configured: int) -> int:
        return self.memory_epochs

    def extra_state(self) -> dict:
        return {"memory_of": self._memory_of}

    def load_extra_state(self, state: dict) -> None:
        self._memory_of = state["memory_of"]
