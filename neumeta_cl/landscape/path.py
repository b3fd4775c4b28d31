"""Paths between two weight configurations of one structure: theta(t), t in [0, 1], theta(0) = A, theta(1) = B.

A path gives the parameters at t (``params(t)``, differentiable in whatever the path trains) and a
deployable net at t (``net(t)``). Buffers (BatchNorm running statistics) are interpolated linearly;
they are statistics, not weights, so ``net(t, bn_data=...)`` recomputes them on data instead
(``repair.reset_batchnorm_``), which is what every barrier of a BatchNorm net should be measured with.

LinearPath: theta(t) = (1 - t) theta_A + t theta_B. The curves (``curves``), the ODE flow
(``flow``) and Fisher-weighted interpolation (``fisher_merge``) are the other paths.
"""

from __future__ import annotations

import copy
from pathlib import Path as FilePath

import torch
from torch import nn

from neumeta_cl.errors import UserError
from neumeta_cl.landscape.align import check_same_structure
from neumeta_cl.landscape.repair import reset_batchnorm_
from neumeta_cl.nets.structure import load_net


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """(1 - t) a + t b; integer tensors (BatchNorm's batch counter) are taken from a."""
    if not torch.is_floating_point(a):
        return a.clone()
    return (1 - t) * a + t * b


class Path:
    """theta(t) between nets ``a`` and ``b`` (same structure). Subclasses define ``params``."""

    name = "path"

    def __init__(self, a: nn.Module, b: nn.Module):
        check_same_structure(a, b, f"a {self.name} path")
        self.a, self.b = a, b
        self.pa = {n: p.detach() for n, p in a.named_parameters()}
        self.pb = {n: p.detach() for n, p in b.named_parameters()}
        self.ba = dict(a.named_buffers())
        self.bb = dict(b.named_buffers())

    def params(self, t: float) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def buffers(self, t: float) -> dict[str, torch.Tensor]:
        return {n: lerp(v, self.bb[n], t) for n, v in self.ba.items()}

    @torch.no_grad()
    def net(self, t: float, bn_data=None) -> nn.Module:
        """A deployable copy of the net at t; BatchNorm statistics recomputed on ``bn_data`` if given."""
        new = copy.deepcopy(self.a)
        state = {**self.buffers(t), **{n: p.detach() for n, p in self.params(t).items()}}
        new.load_state_dict(state)
        if bn_data is not None:
            reset_batchnorm_(new, bn_data)
        return new

    def describe(self) -> dict:
        return {"path": self.name}


class LinearPath(Path):
    """theta(t) = (1 - t) theta_A + t theta_B."""

    name = "linear"

    def params(self, t: float) -> dict[str, torch.Tensor]:
        return {n: lerp(v, self.pb[n], t) for n, v in self.pa.items()}


def load_any_net(source) -> nn.Module:
    """An nn.Module, a ``nets.structure.net_state`` dict, a file holding one, or a run's checkpoint.pt."""
    if isinstance(source, nn.Module):
        return source
    state = source
    if isinstance(source, (str, FilePath)):
        file = FilePath(source)
        if not file.is_file():
            raise UserError(f"No saved network at {file}; pass an nn.Module, a net_state dict or an existing file.")
        state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "strategy" in state and isinstance(state["strategy"], dict):
        state = state["strategy"].get("net", state)  # a run's checkpoint: the strategy's net
    if not (isinstance(state, dict) and "structure" in state and "weights" in state):
        raise UserError("This is not a saved network: expected an nn.Module, a net_state dict "
                        "(neumeta_cl.nets.structure.net_state) or a run's checkpoint.pt.")
    return load_net(state)
