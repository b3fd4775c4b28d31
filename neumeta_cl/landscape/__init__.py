"""The loss landscape between networks: permutation alignment, REPAIR, paths, barriers.

    from neumeta_cl.landscape import align, make_path, evaluate_path
    b2 = align(a, b, method="weights").net           # same function as b, as close to a as can be
    path = make_path(a, b2, "bezier", data=(x, y, t))  # trained bend
    profile = evaluate_path(path, (x_test, y_test, t_test), n=25)
    neumeta_cl.interpolate(a, b, 0.5, path="linear", align="weights")   # a deployable nn.Module

Paths by name (``PATHS``): linear, bezier, polychain (Garipov et al. 2018), ode (a trained neural
ODE flow), fisher (Matena & Raffel 2022).
"""

from __future__ import annotations

from torch import nn

from neumeta_cl.errors import UserError
from neumeta_cl.landscape.align import METHODS, AlignError, Alignment, align, activation_matching, weight_matching
from neumeta_cl.landscape.barrier import PathProfile, evaluate_path, loss_and_accuracy, loss_barrier, plot_profiles
from neumeta_cl.landscape.curves import CURVES, CurvePath, train_bend
from neumeta_cl.landscape.fisher_merge import FisherPath, diagonal_fisher, fisher_interpolate
from neumeta_cl.landscape.flow import FlowPath, train_flow
from neumeta_cl.landscape.path import LinearPath, Path, lerp, load_any_net
from neumeta_cl.landscape.repair import repair, reset_batchnorm_
from neumeta_cl.registry import Registry

PATHS: Registry = Registry("path")
for _name in ("linear", "bezier", "polychain", "ode", "fisher"):
    PATHS.register(_name)(_name)


def _split(data):
    x, y = data[0], data[1]
    t = data[2] if len(data) > 2 else None
    return x, y, t


def make_path(a: nn.Module, b: nn.Module, kind: str = "linear", data=None, steps: int = 500, lr: float = 0.01,
              batch_size: int = 128, seed: int = 0, flow_steps: int | None = None) -> Path:
    """The path ``kind`` from a to b. Trained paths fit on ``data`` = (x, y[, t]): bezier/polychain
    (``steps`` SGD steps on the bend), ode (a Bezier curve first, then ``flow_steps`` on the flow),
    fisher (the Fishers are estimated on x)."""
    PATHS.get(kind)
    if kind == "linear":
        return LinearPath(a, b)
    if data is None:
        raise UserError(f"The {kind} path is fitted to data; pass data=(x, y) or (x, y, t).")
    x, y, t = _split(data)
    if t is None:
        import torch

        t = torch.zeros(len(x), dtype=torch.long, device=x.device)
    if kind == "fisher":
        return FisherPath(a, b, diagonal_fisher(a, x, t, seed=seed), diagonal_fisher(b, x, t, seed=seed + 1))
    curve = train_bend(CurvePath(a, b, "polychain" if kind == "polychain" else "bezier"), (x, y, t), steps, lr,
                       batch_size=batch_size, seed=seed)
    if kind != "ode":
        return curve
    flow = FlowPath.from_curve(curve)
    train_flow(flow, (x, y, t), steps if flow_steps is None else flow_steps, lr, batch_size=batch_size, seed=seed + 1)
    flow.train_info["curve"] = curve.train_info
    return flow


def interpolate(a, b, t: float, path: str = "linear", align: str | None = None, data=None, bn_data=None,
                repair_data=None, **path_kw) -> nn.Module:
    """A deployable ``nn.Module`` at ``t`` in [0, 1] on the path between two saved networks.

    ``a``, ``b``: nn.Modules, ``net_state`` dicts, files holding one, or run checkpoints (checkpoint.pt).
    ``align``: None | "weights" | "activations" (B is relabelled to match A first; activations and
    trained paths need ``data``). ``bn_data``: recompute BatchNorm statistics at t on this data.
    ``repair_data``: apply REPAIR at t (Jordan et al. 2023)."""
    if not 0.0 <= float(t) <= 1.0:
        raise UserError(f"interpolate: t must lie in [0, 1], got {t}.")
    net_a, net_b = load_any_net(a), load_any_net(b)
    if align is not None:
        x = None if data is None else (data[0], data[2] if len(data) > 2 else None)
        net_b = _align(net_a, net_b, align, x)
    p = make_path(net_a, net_b, path, data=data, **path_kw)
    net = p.net(float(t), bn_data)
    if repair_data is not None and 0.0 < float(t) < 1.0:
        net = repair(net, p.net(0.0, bn_data), p.net(1.0, bn_data), float(t), repair_data)
    return net


def _align(a, b, method, x):
    from neumeta_cl.landscape.align import align as do_align

    return do_align(a, b, method=method, data=x).net


__all__ = ["PATHS", "METHODS", "AlignError", "Alignment", "align", "weight_matching", "activation_matching", "repair",
           "reset_batchnorm_", "Path", "LinearPath", "CurvePath", "CURVES", "train_bend", "FlowPath", "train_flow",
           "FisherPath", "diagonal_fisher", "fisher_interpolate", "PathProfile", "evaluate_path", "loss_barrier",
           "loss_and_accuracy", "plot_profiles", "make_path", "interpolate", "lerp", "load_any_net"]
