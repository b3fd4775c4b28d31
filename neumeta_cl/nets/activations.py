"""Activation functions by name, so configs and morphs can choose them."""

from torch import nn

from neumeta_cl.errors import ConfigError

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"Unknown activation '{name}'; valid activations are: {', '.join(sorted(ACTIVATIONS))}.")
    return ACTIVATIONS[name]()
