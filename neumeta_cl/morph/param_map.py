"""ParamMap: how each parameter of a morphed net derives from the old net's parameters.

Regularisers keep per-parameter tensors keyed by ``named_parameters()`` names: EWC's anchor
theta* and importance F, SI's omega. After a morph those tensors must describe the new net.
Every morph we have is, per parameter, a re-indexing along some dims with an optional scale:

    new[..., j, ...] = old[..., index[j], ...] * scale[j]      (index[j] == -1: a brand-new unit)

so a ParamMap holds, per NEW parameter name, one ``ParamRule``: the old parameter it comes from
(``None`` = a brand-new parameter, e.g. an inserted layer) and a ``DimMap`` per re-indexed dim.
Widen is ``index`` with repeats and ``scale = 1/copies`` on the next layer's incoming dim; prune
is ``index`` = kept units; extend_classes appends ``-1``; deepen renames the blocks after the
insertion. Anchors transform exactly like the weights. Importances transform so that the EWC
penalty sum F (w - w*)^2 of the old net equals the new net's whenever the new weights are the
morph of the old ones:

    F_new[j] = F_old[index[j]] / (scale[j]^2 * copies(index[j]))     F_new = 0 for new units

Dividing by ``copies`` shares an old unit's importance among its replicas (instead of giving
every replica the full F/s^2, which would count the unit k times). It is also the tightest
diagonal bound: with the copies' deviations d_c, k * sum_c d_c^2 >= (sum_c d_c)^2, so moving
the copies apart is never cheaper than the original quadratic penalty on their sum.
New units start free (importance 0) with the anchor equal to their value at the morph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn


def gather(t: torch.Tensor, dim: int, index: torch.Tensor, scale: torch.Tensor | None = None,
           fresh: torch.Tensor | None = None) -> torch.Tensor:
    """new[..., j, ...] = t[..., index[j], ...] * scale[j]; where index[j] < 0, fresh[..., j, ...] (or 0)."""
    index = index.to(t.device)
    out = t.index_select(dim, index.clamp(min=0))
    shape = [1] * t.dim()
    shape[dim] = -1
    if scale is not None:
        out = out * scale.to(out).view(shape)
    new = (index < 0).view(shape)
    if bool(new.any()):
        fill = fresh.to(out) if fresh is not None else torch.zeros_like(out)
        out = torch.where(new, fill, out)
    return out


@dataclass
class DimMap:
    index: torch.Tensor  # long [new size]: new position j takes old position index[j]; -1 = new unit
    scale: torch.Tensor | None = None  # float [new size]: new value = old value * scale[j]

    def importance_factor(self, old_size: int) -> torch.Tensor:
        copies = torch.bincount(self.index[self.index >= 0], minlength=old_size).clamp(min=1)
        f = 1.0 / copies[self.index.clamp(min=0)].double()
        if self.scale is not None:
            f = f / self.scale.double() ** 2
        return f


@dataclass
class ParamRule:
    source: str | None  # old parameter name; None = brand-new parameter
    old_shape: tuple[int, ...] | None = None
    dims: dict[int, DimMap] = field(default_factory=dict)


class ParamMap:
    """new parameter name -> ParamRule, plus the new values of anything brand-new (its anchor)."""

    def __init__(self, rules: dict[str, ParamRule], fresh: dict[str, torch.Tensor] | None = None):
        self.rules, self.fresh = rules, fresh or {}

    @classmethod
    def start(cls, old: nn.Module, rename: Callable[[str], str] | None = None) -> "ParamMap":
        """Every old parameter maps to itself (or to ``rename(name)``) unchanged; ops then edit rules."""
        rename = rename or (lambda n: n)
        return cls({rename(n): ParamRule(n, tuple(p.shape)) for n, p in old.named_parameters()})

    def seal(self, new: nn.Module) -> "ParamMap":
        """Close the map against the finished net: parameters no rule covers are brand-new, rules for
        parameters the net no longer has are dropped, and each shape is checked (a bug otherwise)."""
        params = dict(new.named_parameters())
        self.rules = {n: r for n, r in self.rules.items() if n in params}
        for name, p in params.items():
            rule = self.rules.setdefault(name, ParamRule(None))
            if rule.source is None:
                self.fresh[name] = p.detach().clone()
                continue
            expect = list(rule.old_shape)
            for d, m in rule.dims.items():
                expect[d] = len(m.index)
            if tuple(expect) != tuple(p.shape):
                raise RuntimeError(f"ParamMap rule for {name} predicts shape {tuple(expect)}, net has {tuple(p.shape)}")
            if any(bool((m.index < 0).any()) for m in rule.dims.values()):
                self.fresh[name] = p.detach().clone()
        return self

    def _remap(self, old: dict[str, torch.Tensor], importance: bool) -> dict[str, torch.Tensor]:
        out = {}
        for name, rule in self.rules.items():
            if rule.source is None:
                fresh = self.fresh[name]
                out[name] = torch.zeros_like(fresh) if importance else fresh.clone()
                continue
            t = old.get(rule.source)
            if t is None or tuple(t.shape) != rule.old_shape:
                continue  # the old dict never covered this parameter (or an older shape of it): stays free
            mask = None
            for d, m in rule.dims.items():
                factor = m.importance_factor(t.shape[d]) if importance else m.scale
                t = gather(t, d, m.index, factor)
                shape = [1] * t.dim()
                shape[d] = -1
                new = (m.index < 0).to(t.device).view(shape)
                mask = new if mask is None else mask | new
            if mask is not None and bool(mask.any()):
                fill = torch.zeros_like(t) if importance else self.fresh[name].to(t)
                t = torch.where(mask, fill, t)
            out[name] = t.clone() if t is old.get(rule.source) else t
        return out

    def remap_anchor(self, old: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """theta* (or any tensor that transforms like the weights) for the new net."""
        return self._remap(old, importance=False)

    def remap_importance(self, old: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """F / omega for the new net: shared among copies, divided by scale^2, zero for new units."""
        return self._remap(old, importance=True)

    def __repr__(self) -> str:
        changed = {n: (r.source, sorted(r.dims)) for n, r in self.rules.items() if r.source != n or r.dims}
        return f"ParamMap({len(self.rules)} params, changed={changed})"


def remap_anchors(anchors: list[tuple[dict, dict]], param_map: ParamMap) -> list[tuple[dict, dict]]:
    """EWC's list of (fisher, theta*) pairs, carried across a morph."""
    return [(param_map.remap_importance(f), param_map.remap_anchor(s)) for f, s in anchors]
