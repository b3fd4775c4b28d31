"""``grow_ewc``: EWC on the old capacity plus fresh capacity for every new experience.

Before each experience after the first, every hidden layer is widened by ``grow_by`` units with
Net2Net's zero init (the function is kept exactly), and the EWC anchors are remapped through the
morph, so the new units start free and the old ones stay anchored. Start narrower than a
fixed-width baseline to end at the same parameter count (e.g. 2x128 + 4 x 32 = 2x256).
"""

from __future__ import annotations

from neumeta_cl.plugins.morph import GrowPolicy, MorphPlugin
from neumeta_cl.protocol import Plugin, RunSettings
from neumeta_cl.strategies.optim import OptimConfig
from neumeta_cl.strategies.ewc import EWC


class GrowEWC(EWC):
    def __init__(self, net, optim: OptimConfig, *, batch_size: int = 128, seed: int = 0, ewc_lambda: float = 100.0,
                 mode: str = "separate", decay: float = 1.0, fisher_batch_size: int | None = None, grow_by: int = 32,
                 init: str = "zero", seed_offset: int = 1000):
        super().__init__(net, optim, batch_size=batch_size, seed=seed, ewc_lambda=ewc_lambda, mode=mode, decay=decay,
                         fisher_batch_size=fisher_batch_size)
        self.policy = GrowPolicy(grow_by=grow_by, init=init, seed=seed, seed_offset=seed_offset)

    def plugins(self, settings: RunSettings) -> list[Plugin]:
        return [*self.parts, MorphPlugin([], settings.morph_every_n_steps, settings.eval_batch_size, policy=self.policy,
                                         probe_size=settings.probe_size, train_mode_gap=settings.train_mode_gap)]
