"""A morphable net's structure as plain data, and the net rebuilt from it.

Morphs change widths, depth, activations and heads, so a checkpoint cannot rebuild the net from
the config alone. ``describe(net)`` lists every block's layers with their constructor arguments
(plain data: loads with ``torch.load(weights_only=True)``); ``build(description)`` makes an
untrained net of exactly that structure, into which ``load_state_dict`` then puts the weights.
"""

from __future__ import annotations

from torch import nn

from neumeta_cl.nets.cnn import CNN
from neumeta_cl.nets.heads import MultiHead, SingleHead
from neumeta_cl.nets.mlp import MLP

NETS = {"MLP": MLP, "CNN": CNN}
# layer class -> the constructor arguments that define it
_ARGS = {
    nn.Linear: ("in_features", "out_features"),
    nn.Conv1d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"),
    nn.Conv2d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"),
    nn.BatchNorm1d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.BatchNorm2d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.MaxPool1d: ("kernel_size", "stride"),
    nn.MaxPool2d: ("kernel_size", "stride"),
    nn.AdaptiveAvgPool1d: ("output_size",),
    nn.AdaptiveAvgPool2d: ("output_size",),
    nn.LeakyReLU: ("negative_slope",),
    nn.ReLU: (), nn.GELU: ("approximate",), nn.Tanh: (), nn.SiLU: (), nn.Identity: (), nn.Flatten: ("start_dim", "end_dim"),
}
_LAYERS = {cls.__name__: cls for cls in _ARGS}


def _layer(m: nn.Module) -> dict:
    cls = type(m)
    if cls not in _ARGS:
        raise TypeError(f"cannot describe a {cls.__name__} layer; known layers: {', '.join(sorted(_LAYERS))}")
    args = {a: getattr(m, a) for a in _ARGS[cls]}
    if cls in (nn.Linear, nn.Conv1d, nn.Conv2d):
        args["bias"] = m.bias is not None
    return {"type": cls.__name__, **{k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}}


def _make(spec: dict) -> nn.Module:
    spec = dict(spec)
    cls = _LAYERS[spec.pop("type")]
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})


def describe(net: nn.Module) -> dict:
    """The structure of an MLP or CNN, after any morphs, as plain data."""
    kind = type(net).__name__
    if kind not in NETS:
        raise TypeError(f"cannot describe a {kind}; known nets: {', '.join(NETS)}")
    head = net.head
    heads = [[h.in_features, h.out_features] for h in head.heads] if isinstance(head, MultiHead) else None
    single = None if heads else [head.linear.in_features, head.linear.out_features]
    return {
        "net": kind, "input_shape": list(net.input_shape),
        "blocks": [[_layer(m) for m in block] for block in net.blocks],
        "pool": [_layer(m) for m in net.pool] if kind == "CNN" else None,
        "heads": heads, "single_head": single,
    }


def build(desc: dict) -> nn.Module:
    """An untrained net with exactly the described structure (load its weights afterwards)."""
    cls = NETS[desc["net"]]
    net = cls.__new__(cls)
    nn.Module.__init__(net)
    net.input_shape = tuple(desc["input_shape"])
    net.blocks = nn.ModuleList(nn.Sequential(*(_make(s) for s in block)) for block in desc["blocks"])
    if desc["pool"] is not None:
        net.pool = nn.Sequential(*(_make(s) for s in desc["pool"]))
    if desc["heads"]:
        head = MultiHead(desc["heads"][0][0], [k for _, k in desc["heads"]])
        for h, (d, _) in zip(head.heads, desc["heads"]):  # each head reads the features it was given
            if h.in_features != d:
                raise ValueError("heads of different input widths are not a morphable net")
        net.head = head
    else:
        net.head = SingleHead(*desc["single_head"])
    return net


def net_state(net: nn.Module) -> dict:
    """Structure and weights of a net: everything needed to bring it back."""
    return {"structure": describe(net), "weights": dict(net.state_dict())}  # saved at once, no copy needed


def load_net(state: dict) -> nn.Module:
    net = build(state["structure"])
    net.load_state_dict(state["weights"])
    return net
