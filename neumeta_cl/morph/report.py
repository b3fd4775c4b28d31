"""What every morph operator returns, and the accounting that goes into it.

An operator deep-copies the net, edits the copy, and hands both to ``finish`` which times the
edit, counts parameters and FLOPs before/after, and measures how far the function moved on the
probe batch. ``wall_ms`` is the edit alone (deep copy + surgery + ParamMap);
``accounting_ms`` is the FLOP counting and probe forwards, reported separately so that neither
hides the other.

Where the accounting time goes: FLOPs are read off the Linear/Conv layers of a 1-sample forward
(equal to FlopCounterMode's count, which costs ~2.5 ms of dispatch per call, ~1 s on first use),
once per structure, so what remains is the probe forwards: before and after net in eval mode, and, when the probe
asks for it (``Probe(train_mode=True)``), again in train mode for BatchNorm nets. Those are the measurement
itself and scale with the probe, which is why a run's probe is small (``morph.probe_size``) and the
train-mode gap is opt-in (``morph.train_mode_gap``); the README has the measurements. What makes them
cheaper without changing what they measure (``probe_outputs``): stages that the morph left bit for
bit unchanged run once for both nets; a conv net's eval-mode probe runs in cache-sized chunks; on
CPU a 1-channel convolution runs channels-last and 2x2 max pooling as strided maxima. The last two
change the outputs by float32 rounding at most.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.modules import module as torch_module
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.flop_counter import FlopCounterMode

from neumeta_cl.errors import UserError
from neumeta_cl.morph.param_map import ParamMap
from neumeta_cl.nets.activations import ACTIVATIONS
from neumeta_cl.nets.cnn import CNN
from neumeta_cl.nets.heads import MultiHead, SingleHead
from neumeta_cl.nets.mlp import MLP


class MorphError(UserError):
    """An impossible morph request (bad layer, width that does not grow, ratio out of range, ...)."""


@dataclass
class MorphReport:
    op: str
    detail: dict
    wall_ms: float
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    preservation_error: float | None  # max |f_before(x) - f_after(x)| on the probe, both nets in eval mode
    claims_preservation: bool = False  # whether the operator promises preservation_error ~ 0 (eval mode)
    # Same measurement with both nets in train mode (BatchNorm on batch statistics; running stats are
    # restored afterwards). Only measured when the probe asks (Probe.train_mode) and the nets have
    # BatchNorm, where it differs from eval mode.
    preservation_error_train: float | None = None
    accounting_ms: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MorphResult:
    net: nn.Module
    report: MorphReport
    param_map: ParamMap


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _one_sample(net: nn.Module, input_shape, task: int | None):
    p = next(net.parameters())
    x = torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype)
    t = torch.full((1,), task or 0, dtype=torch.long, device=p.device)
    return x, t


@contextlib.contextmanager
def mode(net: nn.Module, train: bool):
    """Run ``net`` in train/eval mode without leaving a trace: mode and BN running stats restored."""
    was = net.training
    saved = {n: b.clone() for n, b in net.named_buffers()} if train else None
    net.train(train)
    try:
        yield net
    finally:
        net.train(was)
        if saved is not None:
            with torch.no_grad():
                for n, b in net.named_buffers():
                    b.copy_(saved[n])


# FlopCounterMode counts matmuls, convolutions and attention, nothing else. In a net made only of
# the module types below (exact types: a subclass may override forward), each Linear/Conv call is one
# counted op and nothing else is counted, so the count can be read off a plain 1-sample forward.
_MATMUL_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_UNCOUNTED_MODULES = frozenset({
    MLP, CNN, SingleHead, MultiHead, nn.Sequential, nn.ModuleList, nn.Identity, nn.Flatten,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    *ACTIVATIONS.values(),
})
_KNOWN_MODULES = _UNCOUNTED_MODULES | frozenset(_MATMUL_MODULES)


def _layer_flops(total: list, m: nn.Module, inp, out) -> None:
    # What FlopCounterMode gives (add)mm and convolution: 2 per multiply-add, bias free. Every output
    # element is a dot product over in_features (Linear) or in_channels / groups * kernel taps (Conv):
    # weight.shape[1:] either way.
    total[0] += 2 * out.numel() * (m.weight.numel() // m.weight.shape[0])


def _readable(net: nn.Module) -> bool:
    """Whether flops_per_sample may read FLOPs off the layers: only known module types, and no hooks
    (a hook could run counted ops of its own)."""
    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return False
    return all(type(m) in _KNOWN_MODULES and not m._forward_hooks and not m._forward_pre_hooks
               for m in net.modules())


def flops_per_sample(net: nn.Module, input_shape=None, task: int | None = None) -> int:
    """FLOPs of a 1-sample forward in eval mode, as torch's FlopCounterMode counts them
    (matmuls/convolutions, 2 per multiply-add; elementwise ops and BatchNorm are free).

    For nets of known module types the Linear/Conv layers' output shapes on that forward give the
    count directly (tests check equality with FlopCounterMode); anything else goes through
    FlopCounterMode itself."""
    input_shape = input_shape if input_shape is not None else net.input_shape
    if not _readable(net):
        return flop_counter_flops(net, input_shape, task)
    key = _structure(net, input_shape, task)
    if key in _COUNTED:
        return _COUNTED[key]
    x, t = _one_sample(net, input_shape, task)
    total = [0]
    hooks = [m.register_forward_hook(lambda m, i, o: _layer_flops(total, m, i, o))
             for m in net.modules() if type(m) in _MATMUL_MODULES]
    try:
        with mode(net, False), torch.no_grad():
            net(x, t)
    finally:
        for h in hooks:
            h.remove()
    if len(_COUNTED) >= _COUNTED_MAX:
        del _COUNTED[next(iter(_COUNTED))]  # the oldest
    _COUNTED[key] = int(total[0])
    return _COUNTED[key]


# A readable net's FLOPs follow from its structure alone, so each structure is counted once per process
# (a morph's before-net is usually the structure the previous morph made).
_COUNTED: dict[tuple, int] = {}
_COUNTED_MAX = 256


def _structure(net: nn.Module, input_shape, task: int | None) -> tuple:
    """All that a readable net's FLOP count depends on: its modules with their settings (repr), the
    shapes of its parameters, the input shape and the task (which head a multi-head net runs)."""
    return repr(net), tuple(tuple(p.shape) for p in net.parameters()), tuple(input_shape), task or 0


def flop_counter_flops(net: nn.Module, input_shape=None, task: int | None = None) -> int:
    """flops_per_sample by torch's FlopCounterMode (any net; ~2.5 ms of dispatch overhead per call)."""
    input_shape = input_shape if input_shape is not None else net.input_shape
    x, t = _one_sample(net, input_shape, task)
    counter = FlopCounterMode(display=False)
    with mode(net, False), torch.no_grad(), counter:
        net(x, t)
    return int(counter.get_total_flops())


@dataclass(frozen=True, eq=False)  # tensors have no single truth value, so no field-wise ==
class Probe:
    """The batch a morph's report measures preservation on (a plain ``x`` or ``(x, t)`` works too).
    ``train_mode``: also measure the gap with both nets in train mode (BatchNorm on batch statistics),
    which doubles the probe forwards of a BatchNorm net."""
    x: torch.Tensor
    t: torch.Tensor | None = None
    train_mode: bool = False


def split_probe(net: nn.Module, probe):
    """probe -> (x, t); a multi-head net needs task labels to pick heads."""
    if isinstance(probe, Probe):
        x, t = probe.x, probe.t
    elif isinstance(probe, (tuple, list)):
        x, t = probe[0], (probe[1] if len(probe) > 1 else None)
    else:
        x, t = probe, None
    if t is None and isinstance(getattr(net, "head", None), MultiHead):
        raise MorphError("A multi-head network needs its probe as (x, t) so each sample reaches its task head.")
    return x, t


def _flatten(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)


def stages(net: nn.Module) -> list | None:
    """The forward of an MLP or CNN of known modules up to its features, as a list of callables:
    ``net(x, t) == net.head(s_k(...s_1(s_0(x))), t)``. None for any other net (it runs whole)."""
    if not _readable(net):
        return None
    if type(net) is MLP:
        return [_flatten, *net.blocks]
    if type(net) is CNN:
        return [*net.blocks, net.pool]
    return None


def same_stage(a, b) -> bool:
    """Whether two stages compute the same function bit for bit: the same object, or modules of the
    same types and settings (as their repr shows them; known types only, see ``stages``) whose
    parameters and buffers are equal. The same input then gives the same output, in either mode."""
    if a is b:
        return True
    if not (isinstance(a, nn.Module) and isinstance(b, nn.Module)) or type(a) is not type(b) or repr(a) != repr(b):
        return False
    ta = [*a.named_parameters(), *a.named_buffers()]
    tb = [*b.named_parameters(), *b.named_buffers()]
    return len(ta) == len(tb) and all(
        na == nb and va.dtype == vb.dtype and va.shape == vb.shape and torch.equal(va, vb)
        for (na, va), (nb, vb) in zip(ta, tb))


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """nn.MaxPool2d(2) on (N, C, H, W): y[.., i, j] = max(x[.., 2i, 2j], x[.., 2i, 2j+1], x[.., 2i+1, 2j],
    x[.., 2i+1, 2j+1]) (a trailing odd row/column is dropped), as elementwise maxima of strided views:
    the same values (a maximum is exact; NaN propagates in both), about 4x faster than PyTorch's CPU
    max_pool2d in the standard layout on the bench's 256 x 32 x 28 x 28 activations."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    rows = torch.maximum(x[..., 0:h:2, :w], x[..., 1:h:2, :w])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _fast_pool(m: nn.Module, h: torch.Tensor) -> bool:
    """Whether ``max_pool_2x2`` computes ``m(h)``: a plain 2x2 MaxPool2d on a standard-layout input of at least 2x2."""
    return (type(m) is nn.MaxPool2d and not m.ceil_mode and not m.return_indices and h.is_contiguous()
            and min(h.shape[-2:]) >= 2 and [_pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation)]
            == [(2, 2), (2, 2), (0, 0), (1, 1)])


def run_stage(stage, h: torch.Tensor, train: bool) -> torch.Tensor:
    """One stage of ``stages``. On CPU a Sequential of 2-D layers runs module by module, with two
    faster kernels for the same computation: a convolution of a 1-channel input (the first layer)
    runs channels-last, where oneDNN is about 5x faster than in the standard layout (results differ by
    float32 rounding: 1.9e-6 on the bench CNN's logits), and 2x2 max pooling of a standard-layout
    tensor is ``max_pool_2x2`` (bit for bit the same), and a ReLU overwrites the tensor the module
    before it made instead of allocating another (38 MB at 256 x 48 x 28 x 28). BatchNorm in train mode gets the standard
    layout: its channels-last CPU kernel sums each channel's batch statistics in one sequential
    pass (1.6e-3 off a float64 forward of the bench CNN's probe, against 2e-6)."""
    if not isinstance(stage, nn.Sequential) or h.device.type != "cpu" or h.dim() != 4:
        return stage(h)
    caller_storage = h.untyped_storage().data_ptr()
    for m in stage:
        if type(m) is nn.Conv2d and m.in_channels == 1:
            h = h.to(memory_format=torch.channels_last)  # .to restrides a 1-channel tensor; .contiguous would not
        elif train and isinstance(m, _BatchNorm):
            h = h.contiguous()
        if _fast_pool(m, h):
            h = max_pool_2x2(h)
        elif type(m) is nn.ReLU and h.untyped_storage().data_ptr() != caller_storage:
            h = torch.relu_(h)  # h was made by this stage (not a view of its input): no one else holds it
        else:
            h = m(h)
    return h


# In eval mode every layer of a net ``stages`` covers treats each sample on its own, so a conv net's
# probe can run in chunks: the same outputs up to float32 rounding (a convolution may block another
# batch size differently; tests check it), and each chunk's activations fit the cache (256 images
# through a 48-channel first layer make 38 MB per tensor; in chunks of 64 that forward took half the
# time). Train mode needs the whole batch for BatchNorm's statistics.
EVAL_CHUNK = 64


def _features(sb, sa, k: int, x, train: bool):
    """Both nets' features (the heads' input) from their stages, the first k (shared) run once."""
    h, shared = x, x
    for i, s in enumerate(sb):
        if i == k:
            shared = h
        h = run_stage(s, h, train)
    if k == len(sb):
        shared = h
    for s in sa[k:]:
        shared = run_stage(s, shared, train)
    return h, shared


def probe_outputs(before: nn.Module, after: nn.Module, x: torch.Tensor, t, train: bool = False):
    """(before(x, t), after(x, t)) with both nets in eval or train mode (BatchNorm running stats
    restored). The longest prefix of stages the two nets share bit for bit (``same_stage``) runs
    once: its output is the same for both. A conv net's features in eval mode are computed in
    chunks of EVAL_CHUNK samples; the heads run on the whole batch (a multi-head output's width
    depends on the tasks in the batch)."""
    sb, sa = stages(before), stages(after)
    with torch.no_grad(), mode(before, train), mode(after, train):
        if sb is None or sa is None:
            return before(x, t), after(x, t)
        k = 0
        while k < min(len(sb), len(sa)) and same_stage(sb[k], sa[k]):
            k += 1
        n = EVAL_CHUNK if not train and type(before) is CNN and type(after) is CNN else len(x)
        if len(x) <= n:
            fb, fa = _features(sb, sa, k, x, train)
        else:
            chunks = [_features(sb, sa, k, x[i:i + n], train) for i in range(0, len(x), n)]
            fb, fa = torch.cat([b for b, _ in chunks]), torch.cat([a for _, a in chunks])
        return before.head(fb, t), after.head(fa, t)


def output_gap(before: nn.Module, after: nn.Module, probe, train: bool = False) -> float:
    """max |f_before(x) - f_after(x)| over the probe; the after-net may have more outputs (new
    classes, a bigger new head), so only the outputs the before-net had are compared."""
    x, t = split_probe(before, probe)
    a, b = probe_outputs(before, after, x, t, train)
    b = b[:, : a.shape[1]]
    both_inf = torch.isinf(a) & (a == b)  # multi-head padding (-inf) on both sides is not a change
    gap = torch.where(both_inf, torch.zeros_like(a), (a - b).abs())
    return float(gap.max()) if gap.numel() else 0.0


def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in net.modules())


def finish(op: str, before: nn.Module, after: nn.Module, param_map: ParamMap, detail: dict, t0: float,
           probe=None, claims_preservation: bool = False) -> MorphResult:
    """Close a morph: stop the clock on the edit, then count and measure."""
    wall_ms = (time.perf_counter() - t0) * 1e3
    t1 = time.perf_counter()
    input_shape = getattr(before, "input_shape", None)
    if input_shape is None and probe is not None:
        input_shape = tuple(split_probe(before, probe)[0].shape[1:])
    report = MorphReport(
        op=op, detail=detail, wall_ms=wall_ms,
        params_before=count_params(before), params_after=count_params(after),
        flops_before=flops_per_sample(before, input_shape), flops_after=flops_per_sample(after, input_shape),
        preservation_error=None, claims_preservation=claims_preservation,
    )
    if probe is not None:
        report.preservation_error = output_gap(before, after, probe, train=False)
        if getattr(probe, "train_mode", False) and (has_batchnorm(before) or has_batchnorm(after)):
            try:
                report.preservation_error_train = output_gap(before, after, probe, train=True)
            except ValueError:  # BatchNorm cannot take batch statistics of a single value per channel
                pass
    report.accounting_ms = (time.perf_counter() - t1) * 1e3
    return MorphResult(net=after, report=report, param_map=param_map)
