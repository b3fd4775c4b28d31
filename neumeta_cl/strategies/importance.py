"""Quadratic importance penalties: EWC, SI and MAS are one penalty with three importance estimators.

    penalty = strength * sum_k sum_i Omega_k,i (theta_i - theta*_k,i)^2

Only Omega differs between the methods:

- EWC (``ewc.FisherImportance``): the diagonal Fisher, estimated after an experience;
- SI (``si.PathIntegral``): the path integral of the loss decrease along the training trajectory,
  accumulated at every step;
- MAS (``mas.OutputSensitivity``): the mean |gradient| of the squared L2 norm of the output,
  estimated after an experience (no labels needed).

``QuadraticPenalty`` (the plugin) owns the anchors (Omega_k, theta*_k) and their life cycle: it
adds the penalty to the loss, asks its ``Importance`` for a new Omega after each experience,
merges it with the old ones (``separate``: one anchor per experience; ``merge``: one anchor whose
Omega is ``Importance.merge(old, new)``), and carries every anchor across a morph through the
morph's ``ParamMap`` (importances shared among copies and divided by scale^2, anchors like the
weights), so the penalty of a function-preserving morph's result equals the penalty before it.
"""

from __future__ import annotations

import torch
from torch import nn

from neumeta_cl.errors import ConfigError
from neumeta_cl.protocol import Plugin

Tensors = dict[str, torch.Tensor]


def quadratic_penalty(net: nn.Module, anchors: list[tuple[Tensors, Tensors]]) -> torch.Tensor:
    """sum over anchors (Omega, theta*) of sum_i Omega_i (theta_i - theta*_i)^2.

    Parameters without an entry (added since) are free; so are entries of another shape."""
    params = dict(net.named_parameters())
    total = torch.zeros((), device=next(net.parameters()).device)
    for omega, star in anchors:
        for name, w in omega.items():
            p = params.get(name)
            if p is not None and p.shape == w.shape:
                total = total + (w * (p - star[name]) ** 2).sum()
    return total


class Importance:
    """How much each parameter matters to what the net has learned (one estimator per method).

    ``estimate`` runs after an experience; ``begin`` / ``after_step`` let an estimator follow the
    training trajectory (SI); ``merge`` combines an old and a new estimate into one anchor's Omega.
    Per-parameter state of its own follows a morph in ``remap``; state is plain data.
    """

    def begin(self, net: nn.Module) -> None:
        """An experience starts training (after any morph)."""

    def before_step(self, net: nn.Module) -> None:
        """Gradients are in ``p.grad``, the optimizer has not stepped."""

    def after_step(self, net: nn.Module) -> None:
        """The optimizer has stepped."""

    def estimate(self, net: nn.Module, experience, device) -> Tensors:
        raise NotImplementedError

    def merge(self, old: Tensors, new: Tensors) -> Tensors:
        """One anchor's Omega from the previous one and this experience's (``keep="merge"``)."""
        return new

    def remap(self, param_map) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def merge_shared(old: Tensors, new: Tensors, f) -> Tensors:
    """``f(old, new)`` where a parameter has both (same shape); ``new`` alone elsewhere."""
    return {n: f(old[n], w) if n in old and old[n].shape == w.shape else w for n, w in new.items()}


class QuadraticPenalty(Plugin):
    """The plugin: anchors, the penalty in the loss, consolidation after each experience, morphs."""

    KEEP = ("separate", "merge")

    def __init__(self, strength: float, importance: Importance, keep: str = "merge", name: str = "lambda"):
        if keep not in self.KEEP:
            raise ConfigError(f"Unknown anchor mode '{keep}'; valid modes are: {', '.join(self.KEEP)}.")
        if strength < 0:
            raise ConfigError(f"strategy.{name} must be >= 0, got {strength}.")
        self.strength, self.importance, self.keep = strength, importance, keep
        self.anchors: list[tuple[Tensors, Tensors]] = []  # (Omega, theta*) per anchor

    # -- in the step ----------------------------------------------------------------------------
    def loss(self, strategy, x, t, logits):
        if not self.anchors or self.strength == 0:
            return 0.0
        device = next(strategy.net.parameters()).device
        if next(iter(self.anchors[0][0].values())).device != device:  # anchors restored from a checkpoint
            self.anchors = [({k: v.to(device) for k, v in w.items()}, {k: v.to(device) for k, v in s.items()})
                            for w, s in self.anchors]
        return self.strength * quadratic_penalty(strategy.net, self.anchors)

    def after_backward(self, strategy) -> None:
        self.importance.before_step(strategy.net)

    def after_step(self, strategy) -> None:
        self.importance.after_step(strategy.net)

    # -- around an experience ---------------------------------------------------------------------
    def before_experience(self, run) -> None:
        # Strategy plugins run after the morph plugins: the net seen here is the one that trains.
        self.importance.begin(run.strategy.net)

    def after_training(self, run) -> None:
        net = run.strategy.net
        omega = self.importance.estimate(net, run.experience, run.device)
        star = {name: p.detach().clone() for name, p in net.named_parameters() if name in omega}
        if self.keep == "merge" and self.anchors:
            omega = self.importance.merge(self.anchors[0][0], omega)
            self.anchors = [(omega, star)]
        else:
            self.anchors.append((omega, star))

    # -- morphs and state -------------------------------------------------------------------------
    def remap(self, param_map) -> None:
        """Follow a morph: copied units keep their (shared, rescaled) importance, new units start free."""
        self.anchors = [(param_map.remap_importance(w), param_map.remap_anchor(s)) for w, s in self.anchors]
        self.importance.remap(param_map)

    def state_dict(self) -> dict:
        return {"anchors": [{"importance": w, "star": s} for w, s in self.anchors],
                "estimator": self.importance.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.anchors = [(a["importance"], a["star"]) for a in state["anchors"]]
        self.importance.load_state_dict(state["estimator"])
