"""The morph benchmark (neumeta_cl/morph/bench.py) and the speed-ups it measures: FLOPs read off the
layers equal FlopCounterMode's, the report's numbers are what the slow path gives, pruning's larger
gradient passes and its own surgery leave the scores and the pruned net unchanged."""

import copy
import json

import pytest
import torch
import torch_pruning as tp
from torch import nn

from neumeta_cl.morph import Probe, add_head, bench, deepen, extend_classes, prune, set_activation, widen
from neumeta_cl.morph.prune import fisher_unit_scores, mask_grads, multihead_input_grad, pass_size, taylor_unit_scores
from neumeta_cl.morph.report import (EVAL_CHUNK, flop_counter_flops, flops_per_sample, max_pool_2x2, mode, output_gap, run_stage,
                                     same_stage, stages)
from neumeta_cl.morph.surgery import head_linears
from neumeta_cl.nets import CNN, MLP


def make(kind: str, heads=None, shape=(1, 8, 8), seed: int = 0) -> nn.Module:
    """A small net with BatchNorm statistics that are not the defaults."""
    torch.manual_seed(seed)
    net = MLP(shape, [32, 24], 10, heads=heads) if kind == "mlp" else CNN(shape, [8, 12], 10, heads=heads)
    with torch.no_grad():
        net.train()
        for _ in range(2):
            net(torch.randn(16, *shape) + 0.5, torch.zeros(16, dtype=torch.long))
    return net.eval()


def probe_of(n: int = 48, shape=(1, 8, 8), n_tasks: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g) + 0.5, torch.randint(0, n_tasks, (n,), generator=g)


def morphs(net):
    """The net and what each structural operator makes of it."""
    out = [net, widen(net, 0, 40).net, widen(net, 1, 30, init="zero").net, deepen(net, 0).net, deepen(net, 1).net,
           prune(net, 0.3).net, set_activation(net, "gelu").net]
    multi = isinstance(getattr(net.head, "heads", None), nn.ModuleList)
    return out + [add_head(net, 3).net if multi else extend_classes(net, 2).net]


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("heads", [None, [2, 3]])
def test_flops_read_off_the_layers_equal_flop_counter_mode(kind, heads):
    for net in morphs(make(kind, heads)):
        for task in ([None, 1] if heads else [None]):
            assert flops_per_sample(net, task=task) == flop_counter_flops(net, task=task), (kind, heads, task)


def test_flops_of_1d_convolutions_and_other_kernels():
    net = CNN((3, 40), [8, 16, 16], 10, kernel_size=5, batchnorm=False, activation="tanh")
    for n in (net, widen(net, 2, 24).net, prune(net, 0.25).net):
        assert flops_per_sample(n) == flop_counter_flops(n)


def test_nets_the_layers_do_not_describe_go_to_flop_counter_mode():
    """A hook that multiplies matrices, or a module of unknown type, counts: those nets are counted by
    FlopCounterMode, not read off the layers."""
    net = make("mlp")
    plain = flops_per_sample(net)
    w = torch.randn(24, 24)
    handle = net.blocks[1].register_forward_hook(lambda m, i, o: o @ w)
    try:
        assert flops_per_sample(net) == flop_counter_flops(net) == plain + 2 * 24 * 24
    finally:
        handle.remove()

    class Mixed(nn.Module):  # a layer of a type the reader does not know, with a second matmul
        def __init__(self, lin):
            super().__init__()
            self.lin = lin
            self.register_buffer("mix", torch.randn(lin.out_features, lin.out_features))

        def forward(self, x):
            return self.lin(x) @ self.mix

    net.blocks[1][0] = Mixed(net.blocks[1][0])
    assert flops_per_sample(net) == flop_counter_flops(net) == plain + 2 * 24 * 24


@pytest.mark.parametrize("kind,heads", [("mlp", None), ("cnn", [2, 3])])
def test_report_numbers_are_flop_counter_mode_and_the_probe_gap(kind, heads):
    net = make(kind, heads)
    probe = Probe(*probe_of(), train_mode=True)
    for op in (lambda n: widen(n, 0, 40, probe=probe), lambda n: deepen(n, 0, probe=probe),
               lambda n: prune(n, 0.25, probe=probe), lambda n: set_activation(n, "gelu", probe=probe)):
        r = op(net)
        rep = r.report
        assert (rep.flops_before, rep.flops_after) == (flop_counter_flops(net), flop_counter_flops(r.net))
        assert rep.preservation_error == output_gap(net, r.net, probe)
        if kind == "cnn":
            assert rep.preservation_error_train == output_gap(net, r.net, probe, train=True)
        else:
            assert rep.preservation_error_train is None
        assert rep.accounting_ms > 0


@pytest.mark.parametrize("heads", [None, [2, 3]])
def test_gradient_scores_do_not_depend_on_the_pass_size(heads):
    """prune's default passes (1024 samples for an MLP) give bit for bit the scores of 256-sample passes."""
    net = make("mlp", heads)
    x, t = probe_of(n=1100, n_tasks=2)
    data = (x, torch.randint(0, 2, (len(x),), generator=torch.Generator().manual_seed(4)), t)
    for scores in (taylor_unit_scores, fisher_unit_scores):
        a, b = scores(net, [0, 1], data), scores(net, [0, 1], data, batch_size=256)
        assert all(torch.equal(a[i], b[i]) for i in (0, 1)), scores.__name__


@pytest.mark.parametrize("kind,heads", [("mlp", None), ("cnn", [2, 3])])
@pytest.mark.parametrize("layer", [None, 1])
def test_prune_cuts_what_torch_pruning_cuts(kind, heads, layer):
    """prune's own index surgery removes the same slices torch-pruning's DependencyGraph removes."""
    net = make(kind, heads)
    r = prune(net, 0.3, layer=layer, criterion="l2")
    ref = copy.deepcopy(net)
    hs = head_linears(ref)
    dg = tp.DependencyGraph().build_dependency(ref, example_inputs=torch.zeros(1, 1, 8, 8),
                                               forward_fn=lambda m, x: [h(f) for f in [m.features(x)] for h in hs])
    for i in range(net.depth):
        kept = r.param_map.rules[f"blocks.{i}.0.weight"].dims.get(0)
        if kept is None:
            continue
        gone = sorted(set(range(net.widths[i])) - set(kept.index.tolist()))
        root = ref.blocks[i][0]
        fn = tp.prune_linear_out_channels if isinstance(root, nn.Linear) else tp.prune_conv_out_channels
        dg.get_pruning_group(root, fn, gone).prune()
    ref.eval()
    assert repr(ref) == repr(r.net)
    mine, theirs = r.net.state_dict(), ref.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_quick_bench_summary_and_table():
    """The whole benchmark on digits MLPs (fast): every row, the JSON summary with the accounting maxima."""
    res = bench.run("digits", repeats=1, steps=5, rb_repeats=1, epochs=1, kinds=("mlp",))
    s = json.loads(json.dumps(res.summary))  # what the script prints must be plain JSON
    for key in ("max_ms_mlp", "max_ms_mlp_op", "max_accounting_ms_mlp", "max_accounting_ms_mlp_op",
                "target_accounting_ms_mlp_met", "max_preservation_error", "replace_block_ms_mlp", "per_op"):
        assert key in s, key
    assert "max_accounting_ms_cnn" not in s  # no CNN rows, no CNN figure
    ops = {k.split("[")[0] for k in s["per_op"]}
    assert ops == {f"mlp/{op}" for op in ("widen", "deepen", "prune", "extend_classes", "set_activation", "replace_block")} \
        | {"mlpx5h/widen", "mlpx5h/prune", "mlpx5h/add_head"}
    assert s["max_accounting_ms_mlp"] == max(v["accounting_ms"] for v in s["per_op"].values())
    assert all(v["wall_ms"] > 0 and v["accounting_ms"] > 0 for v in s["per_op"].values())
    assert s["max_preservation_error"] < bench.TARGET_PRESERVATION
    structural = {k: v for k, v in s["per_op"].items() if "replace_block" not in k}
    assert s["max_ms_mlp"] == max(v["wall_ms"] for v in structural.values())
    prunes = [v for k, v in s["per_op"].items() if "/prune[" in k]
    assert prunes and all(0 <= v["acc_after"] <= 1 for v in prunes)
    text = bench.table(res.rows)
    assert len(text.splitlines()) == 2 + len(res.rows) + 1  # header, rule, rows, rule between the two nets
    assert any("accounting" in line and "MLP" in line for line in bench.findings(res))



# --- the probe forwards behind the preservation error -------------------------------------------


def plain_gap(before, after, probe, train=False):
    """The preservation error from each net's own forward, run whole (the definition)."""
    x, t = probe
    with torch.no_grad(), mode(before, train), mode(after, train):
        a, b = before(x, t), after(x, t)
    b = b[:, : a.shape[1]]
    gap = torch.where(torch.isinf(a) & (a == b), torch.zeros_like(a), (a - b).abs())
    return float(gap.max())


@pytest.mark.parametrize("kind,heads,shape", [("mlp", None, (1, 8, 8)), ("mlp", [2, 3], (1, 8, 8)),
                                              ("cnn", None, (1, 8, 8)), ("cnn", [2, 3], (1, 8, 8)),
                                              ("cnn", None, (3, 9, 7))])
def test_stages_compose_to_the_forward(kind, heads, shape):
    """head(stages(x)) is net(x, t): bit for bit where every kernel is the forward's own (MLP, a
    CNN on a 3-channel input), to float32 rounding where the first convolution runs channels-last."""
    net = make(kind, heads, shape=shape)
    x, t = probe_of(shape=shape)
    for train in (False, True):
        with torch.no_grad(), mode(net, train):
            h = x
            for s in stages(net):
                h = run_stage(s, h, train)
            mine, ref = net.head(h, t), net(x, t)
        if kind == "mlp" or shape[0] > 1:
            assert torch.equal(mine, ref), (kind, heads, train)
        else:
            torch.testing.assert_close(mine, ref, rtol=0, atol=1e-5 * float(ref[ref.isfinite()].abs().max()))


def test_nets_with_hooks_or_other_modules_run_whole():
    net = make("mlp")
    assert stages(net) is not None
    handle = net.blocks[0].register_forward_hook(lambda m, i, o: o * 2)
    try:
        assert stages(net) is None  # a hook could do anything; the forward runs as the net defines it
        probe = probe_of()
        assert output_gap(net, widen(net, 1, 30).net, probe) == plain_gap(net, widen(net, 1, 30).net, probe)
    finally:
        handle.remove()


def test_max_pool_2x2_is_max_pool2d():
    g = torch.Generator().manual_seed(0)
    for shape in [(3, 4, 8, 8), (2, 3, 7, 5), (1, 2, 2, 3), (2, 1, 28, 28)]:
        x = torch.randn(shape, generator=g)
        x[0, 0, 0, 0] = float("nan")
        mine, ref = max_pool_2x2(x), nn.MaxPool2d(2)(x)
        assert mine.shape == ref.shape and torch.equal(mine.isnan(), ref.isnan())
        assert torch.equal(mine.nan_to_num(0.0), ref.nan_to_num(0.0)), shape


def test_same_stage_sees_every_parameter_buffer_and_setting():
    net = make("cnn")
    twin = copy.deepcopy(net)
    assert all(same_stage(a, b) for a, b in zip(stages(net), stages(twin)))
    with torch.no_grad():
        twin.blocks[1][1].running_var[3] += 1e-7  # a BatchNorm statistic
    assert same_stage(net.blocks[0], twin.blocks[0]) and not same_stage(net.blocks[1], twin.blocks[1])
    twin = copy.deepcopy(net)
    twin.blocks[0][2] = nn.LeakyReLU(0.1)  # a setting, no parameter
    assert not same_stage(net.blocks[0], twin.blocks[0])
    assert not same_stage(net.blocks[0], widen(net, 0, 10).net.blocks[0])


@pytest.mark.parametrize("kind,heads", [("mlp", None), ("mlp", [2, 3]), ("cnn", None), ("cnn", [2, 3])])
def test_probe_gap_is_the_gap_of_the_whole_forwards(kind, heads):
    """Sharing the unchanged prefix and the faster kernels change no preservation error beyond float32
    rounding (none at all on the MLP), in eval and train mode; both nets keep their state."""
    net = make(kind, heads)
    probe = probe_of(n=EVAL_CHUNK + 37)  # eval mode runs a conv net's probe in chunks: two here
    multi = heads is not None
    for r in (widen(net, 0, 40), widen(net, 1, 30), deepen(net, 0), deepen(net, 1), prune(net, 0.3),
              set_activation(net, "gelu"), add_head(net, 3) if multi else extend_classes(net, 2)):
        before_state = {k: v.clone() for k, v in net.state_dict().items()}
        after_state = {k: v.clone() for k, v in r.net.state_dict().items()}
        for train in ([False, True] if kind == "cnn" else [False]):
            mine, ref = output_gap(net, r.net, probe, train=train), plain_gap(net, r.net, probe, train=train)
            if kind == "mlp":
                assert mine == ref, (r.report.op, r.report.detail)
            else:
                assert abs(mine - ref) < 1e-5, (r.report.op, r.report.detail, train)
        assert all(torch.equal(v, net.state_dict()[k]) for k, v in before_state.items())
        assert all(torch.equal(v, r.net.state_dict()[k]) for k, v in after_state.items())


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_mask_gradients_of_mixed_task_batches_are_autograds_through_the_heads(kind):
    """The scores' routed pass (each task's rows their own leaf) gives bit for bit the mask gradients
    of autograd through MultiHead.forward, also with heads of different sizes (-inf padding)."""
    net = make(kind, [2, 3, 4])
    x, t = probe_of(n=300, n_tasks=3)
    y = torch.randint(0, 2, (len(x),), generator=torch.Generator().manual_seed(5))
    layers = list(range(net.depth))
    mine = list(mask_grads(net, layers, (x, y, t)))
    acts = {}
    hooks = [net.blocks[i].register_forward_hook(lambda m, i_, o, i=i: acts.__setitem__(i, o)) for i in layers]
    try:
        ref = []
        for s in range(0, len(x), pass_size(net)):
            sl = slice(s, s + pass_size(net))
            loss = torch.nn.functional.cross_entropy(net(x[sl], t[sl]), y[sl], reduction="sum")
            grads = torch.autograd.grad(loss, [acts[i] for i in layers])
            ref.append({i: (g * acts[i]).flatten(2).sum(2) if g.dim() > 2 else g * acts[i] for i, g in zip(layers, grads)})
    finally:
        for h in hooks:
            h.remove()
    assert len(mine) == len(ref) and all(torch.equal(a[i], b[i]) for a, b in zip(mine, ref) for i in layers)
    dh = multihead_input_grad(net.head, torch.randn(6, net.head.in_features), torch.tensor([0, 2, 1, 2, 0, 1]),
                              torch.tensor([1, 3, 0, 2, 1, 1]))
    assert dh.shape == (6, net.head.in_features) and dh.isfinite().all()


def test_versus_compares_two_versions_on_the_same_pairs():
    """bench.versus against this very code: every row compared, identical numbers, timings present."""
    import importlib

    modules = [importlib.import_module(f"neumeta_cl.morph.{name}") for name in ("report", "prune")]
    res = bench.versus(*modules, "digits", repeats=1, epochs=1, kinds=("mlp",))
    s, rows = res["summary"], res["rows"]
    assert len(rows) == 14 and s["same_params_flops"] and s["same_pruned_nets"]
    assert s["max_preservation_error_change"] == 0.0
    assert all(r["accounting_ms_old"] > 0 and r["accounting_ms_new"] > 0 for r in rows)
    assert {"taylor_5head_mlp_wall_ms_old", "max_accounting_ratio_mlp", "median_row_accounting_ratio_mlp"} <= s.keys()


def test_flops_are_counted_once_per_structure_and_never_confused():
    """The per-structure count is the count: nets of the same structure share it, any change of a
    width, a setting (stride, pooling), the input shape or the task is counted afresh."""
    net = make("cnn", [2, 3, 4])
    twin = copy.deepcopy(net)
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(2.0)  # other values, same structure
    assert flops_per_sample(twin, task=1) == flops_per_sample(net, task=1) == flop_counter_flops(net, task=1)
    strided = copy.deepcopy(net)
    strided.blocks[0][0].stride = (2, 2)
    variants = [(widen(net, 0, 10).net, None, 0), (strided, None, 0), (net, (1, 10, 10), 0), (net, None, 2)]
    for n, shape, task in variants:
        assert flops_per_sample(n, shape, task) == flop_counter_flops(n, shape, task)
    assert len({flops_per_sample(n, s, k) for n, s, k in variants}) == len(variants)


def test_a_conv_nets_probe_in_chunks_gives_the_outputs_of_one_batch(monkeypatch):
    """Eval mode treats every sample on its own: chunks change the outputs by float32 rounding at most
    (a convolution may block a batch of another size differently)."""
    from neumeta_cl.morph import report

    net = make("cnn", [2, 3])
    x, t = probe_of(n=2 * EVAL_CHUNK + 5)
    after = widen(net, 0, 12).net
    chunked = report.probe_outputs(net, after, x, t)
    monkeypatch.setattr(report, "EVAL_CHUNK", len(x))
    whole = report.probe_outputs(net, after, x, t)
    for c, w in zip(chunked, whole):
        torch.testing.assert_close(c, w, rtol=0, atol=1e-6 * float(w[w.isfinite()].abs().max()))


def test_chunks_whose_tasks_differ_give_the_whole_batchs_outputs():
    """Heads of different sizes and a probe whose chunks hold different tasks: a chunk of one task
    would give that head's width, a mixed one the widest, so the heads run on the whole batch."""
    net = make("cnn", [2, 3])
    x, _ = probe_of(n=2 * EVAL_CHUNK + 8)
    t = torch.cat([torch.zeros(EVAL_CHUNK, dtype=torch.long), torch.ones(EVAL_CHUNK + 8, dtype=torch.long)])
    for r in (widen(net, 0, 12), add_head(net, 4)):
        for train in (False, True):
            assert abs(output_gap(net, r.net, (x, t), train=train) - plain_gap(net, r.net, (x, t), train=train)) < 1e-5
