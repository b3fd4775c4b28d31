"""Net2DeeperNet (Chen, Goodfellow & Shlens, ICLR 2016): insert an identity block after hidden block ``after``.

MLP:  Linear(w, w) with W = I, b = 0, then the activation.
CNN:  ConvNd(w, w) whose kernel is 1 at the centre tap of channel c -> c and 0 elsewhere (stride 1,
      'same' padding), BatchNorm set to undo itself, the activation, and no pooling.

BatchNorm in eval mode computes (x - m) / sqrt(v + eps) * gamma + beta; gamma = sqrt(v + eps) and
beta = m make it the identity for any running stats (m, v). With ``data_x`` the running stats are
the real per-channel mean/variance of the features there, so the block is also close to the
identity in train mode (batch stats ~ running stats), as the paper does; without it m = 0, v = 1.

activation(h) = h needs h in the region where the activation is the identity: after a ReLU block
h >= 0 (max pooling keeps that) and ReLU/LeakyReLU are the identity there. Other combinations
(tanh after tanh, ...) would change the function, so they are refused unless
``activation="identity"`` asks for a purely linear new block.
"""

from __future__ import annotations

import copy
import re
import time

import torch
from torch import nn

from neumeta_cl.morph.param_map import ParamMap
from neumeta_cl.morph.report import MorphError, MorphResult, finish, mode, split_probe
from neumeta_cl.morph.surgery import activation_index, batchnorm, check_layer, like, run_blocks
from neumeta_cl.nets.activations import ACTIVATIONS, make_activation

_NONNEGATIVE = (nn.ReLU,)  # blocks ending in these output h >= 0
_IDENTITY_ON_NONNEGATIVE = (nn.ReLU, nn.LeakyReLU)


def _identity_kernel(conv: nn.Module, what: str) -> None:
    k = conv.kernel_size
    same = all(kk % 2 == 1 and p == d * (kk // 2) for kk, p, d in zip(k, conv.padding, conv.dilation))
    if not same or any(s != 1 for s in conv.stride) or conv.groups != 1:
        raise MorphError(f"{what}: an identity convolution needs stride 1, odd kernels and 'same' padding, "
                         f"got kernel {k}, stride {conv.stride}, padding {conv.padding}.")
    with torch.no_grad():
        conv.weight.zero_()
        centre = tuple(kk // 2 for kk in k)
        for c in range(conv.out_channels):
            conv.weight[(c, c) + centre] = 1.0
        if conv.bias is not None:
            conv.bias.zero_()


def deepen(net, after: int, activation: str | None = None, data_x: torch.Tensor | None = None, probe=None) -> MorphResult:
    """Insert an identity block after hidden block ``after``; ``activation`` None = that block's own,
    or "identity"; ``data_x`` sets the new BatchNorm's statistics (CNN)."""
    t0 = time.perf_counter()
    what = f"deepen after layer {after}"
    block = check_layer(net, after, what)
    prev_act = block[activation_index(block)]
    if activation is None:
        act = copy.deepcopy(prev_act)
    elif activation == "identity":
        act = nn.Identity()
    elif activation in ACTIVATIONS:
        act = make_activation(activation)
    else:
        raise MorphError(f"{what}: unknown activation '{activation}'; valid activations are: {', '.join(sorted([*ACTIVATIONS, 'identity']))}.")
    if not (isinstance(act, nn.Identity) or (isinstance(prev_act, _NONNEGATIVE) and isinstance(act, _IDENTITY_ON_NONNEGATIVE))):
        raise MorphError(f"{what}: a new {type(act).__name__} block after a {type(prev_act).__name__} block would change the function "
                         f"(only ReLU-like activations on ReLU outputs are the identity); pass activation='identity' for a linear block.")
    if probe is not None:
        split_probe(net, probe)

    w, lin, bn = net.widths[after], block[0], batchnorm(block)
    new_lin = like(lin, n_in=w, n_out=w)
    if isinstance(new_lin, nn.Linear):
        with torch.no_grad():
            new_lin.weight.copy_(torch.eye(w))
            if new_lin.bias is not None:
                new_lin.bias.zero_()
    else:
        _identity_kernel(new_lin, what)
    layers = [new_lin]
    if bn is not None:
        new_bn = like(bn, n_out=w)
        mean, var = torch.zeros(w), torch.ones(w)
        if data_x is not None:  # the real statistics of the features the new block sees
            # Train mode: that is where BatchNorm uses batch statistics (the earlier BNs too), so those
            # are the features whose mean/std the new BN will divide out and must multiply back in.
            with torch.no_grad(), mode(net, True):
                h = run_blocks(net, data_x, after + 1).transpose(0, 1).flatten(1).double()
            mean, var = h.mean(1), h.var(1, unbiased=False)
        with torch.no_grad():
            new_bn.running_mean.copy_(mean)
            new_bn.running_var.copy_(var)
            new_bn.weight.copy_((var + new_bn.eps).sqrt())
            new_bn.bias.copy_(mean)
        layers.append(new_bn)
    layers.append(act)

    new = copy.deepcopy(net)
    new.blocks.insert(after + 1, nn.Sequential(*layers))
    # Blocks after the insertion move one place down; the new block's parameters are brand-new.
    shift = lambda name: re.sub(r"^blocks\.(\d+)\.", lambda m: f"blocks.{int(m[1]) + (int(m[1]) > after)}.", name)
    pm = ParamMap.start(net, rename=shift).seal(new)

    detail = {"after": after, "width": w, "activation": type(act).__name__,
              "bn_stats": None if bn is None else ("data" if data_x is not None else "unit")}
    return finish("deepen", net, new, pm, detail, t0, probe, claims_preservation=True)
