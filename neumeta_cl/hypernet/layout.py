"""The family of networks a hypernetwork generates: one architecture, any width, one head per task.

A ``TargetLayout`` is read off a morphable net (``MLP`` or ``CNN``). It knows, for a width
configuration and a task's class count, the shape of every generated layer and how to build the
ordinary ``nn.Module`` those weights load into. Generated nets carry no BatchNorm: a trained
network's BatchNorm is folded into its convolutions before the hypernetwork learns it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from neumeta_cl.errors import ConfigError
from neumeta_cl.nets.cnn import CNN, GridCNN
from neumeta_cl.nets.mlp import MLP


@dataclass(frozen=True)
class LayerShape:
    n_out: int
    n_in: int
    kernel: tuple[int, ...]  # () for Linear; (k,) or (k, k) for convolutions
    resizable_in: bool  # the input side is a hidden layer (its size follows the width)
    resizable_out: bool  # the output side is a hidden layer (not the class outputs)

    @property
    def kernel_numel(self) -> int:
        return math.prod(self.kernel)

    @property
    def fan_in(self) -> int:
        return self.n_in * self.kernel_numel

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.n_out, self.n_in, *self.kernel)


@dataclass(frozen=True)
class TargetLayout:
    kind: str  # "mlp" | "cnn"
    input_shape: tuple[int, ...]
    widths: tuple[int, ...]  # full (maximum) width of each hidden layer
    kernel_size: int = 3
    activation: str = "relu"
    batchnorm: bool = False  # whether trained members of the family (not generated ones) carry BatchNorm

    @classmethod
    def from_net(cls, net: nn.Module) -> "TargetLayout":
        if isinstance(net, CNN):
            if net.pool_size != 1:  # generated targets average each channel once (the INR has no cell coordinate)
                raise ConfigError(f"The hypernetwork generates CNNs with global average pooling, not a "
                                  f"{net.pool_size} x {net.pool_size} grid; use a plain CNN (model=cnn) as the target.")
            has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
            return cls("cnn", tuple(net.input_shape), tuple(net.widths), net.blocks[0][0].kernel_size[0],
                       _activation_name(net), has_bn)
        if isinstance(net, MLP):
            return cls("mlp", tuple(net.input_shape), tuple(net.widths), 1, _activation_name(net))
        raise ConfigError(f"The hypernetwork generates MLP or CNN targets, not {type(net).__name__}; "
                          "use model=mlp or model=cnn.")

    @property
    def depth(self) -> int:
        return len(self.widths)

    @property
    def n_layers(self) -> int:
        """Generated layers: the hidden ones plus the task head."""
        return self.depth + 1

    def at_fraction(self, fraction: float) -> tuple[int, ...]:
        """Every hidden layer at ``fraction`` of its full width (at least one unit)."""
        return tuple(max(1, round(w * fraction)) for w in self.widths)

    def check_widths(self, widths) -> tuple[int, ...]:
        widths = tuple(int(w) for w in widths)
        if len(widths) != self.depth or any(w < 1 for w in widths):
            raise ConfigError(f"widths must be {self.depth} positive integers (one per hidden layer, full width "
                              f"{list(self.widths)}), got {list(widths)}.")
        return widths

    def shapes(self, widths, n_classes: int) -> list[LayerShape]:
        widths = self.check_widths(widths)
        n_in = self.input_shape[0] if self.kind == "cnn" else math.prod(self.input_shape)
        kernel = (self.kernel_size,) * (len(self.input_shape) - 1) if self.kind == "cnn" else ()
        out, first = [], True
        for w in widths:
            out.append(LayerShape(w, n_in, kernel, resizable_in=not first, resizable_out=True))
            n_in, first = w, False
        out.append(LayerShape(n_classes, n_in, (), resizable_in=True, resizable_out=False))
        return out

    def param_count(self, widths, n_classes: int) -> int:
        return sum(s.n_out * s.fan_in + s.n_out for s in self.shapes(widths, n_classes))

    def build(self, widths, n_classes: int, batchnorm: bool = False, pool_size: int = 1) -> nn.Module:
        """An ordinary single-head network of this family (what generated weights load into);
        ``pool_size`` > 1: a ``GridCNN``, whose head reads a pooled grid (the task classifier's)."""
        widths = list(self.check_widths(widths))
        if self.kind == "cnn":
            kwargs = dict(kernel_size=self.kernel_size, batchnorm=batchnorm, activation=self.activation)
            if pool_size != 1:
                return GridCNN(self.input_shape, widths, n_classes, pool_size, **kwargs)
            return CNN(self.input_shape, widths, n_classes, **kwargs)
        if pool_size != 1:
            raise ConfigError(f"An MLP has no feature map to pool; pool_size must be 1, got {pool_size}.")
        return MLP(self.input_shape, widths, n_classes, activation=self.activation)

    @staticmethod
    def state_dict(weights) -> dict:
        """(weight, bias) per generated layer -> the built module's state-dict entries."""
        keys = [(f"blocks.{i}.0.weight", f"blocks.{i}.0.bias") for i in range(len(weights) - 1)]
        keys.append(("head.linear.weight", "head.linear.bias"))
        return {k: v for (kw, kb), (w, b) in zip(keys, weights) for k, v in ((kw, w), (kb, b))}


def _activation_name(net: nn.Module) -> str:
    from neumeta_cl.nets.activations import ACTIVATIONS

    by_type = {cls: name for name, cls in ACTIVATIONS.items()}
    return next(by_type[type(m)] for m in net.blocks[0] if type(m) in by_type)
