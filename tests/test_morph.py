import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neumeta_cl.errors import UserError
from neumeta_cl.morph import (MORPHS, MorphError, Probe, add_head, count_params, deepen, extend_classes, flops_per_sample,
                              prune, remap_anchors, replace_block, set_activation, widen)
from neumeta_cl.morph.prune import mask_grads, taylor_unit_scores
from neumeta_cl.nets import CNN, MLP
from neumeta_cl.strategies.ewc import ewc_penalty

SHAPE = (1, 8, 8)


def make(kind: str, heads: bool = False, activation: str = "relu", seed: int = 0) -> nn.Module:
    """A small net with non-trivial BatchNorm: random affine parameters and running stats from a
    few train-mode passes, then eval mode."""
    torch.manual_seed(seed)
    hs = [3, 4] if heads else None
    net = MLP(SHAPE, [32, 24], 10, heads=hs, activation=activation) if kind == "mlp" else CNN(SHAPE, [8, 12], 10, heads=hs, activation=activation)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
        net.train()
        for _ in range(3):
            net(torch.randn(32, *SHAPE) * 2 + 0.5, torch.zeros(32, dtype=torch.long))
    return net.eval()


def probe_of(net, n: int = 64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *SHAPE, generator=g) * 2 + 0.5
    t = torch.randint(0, 2, (n,), generator=g)
    return x, t


def gap(a: nn.Module, b: nn.Module, probe, train: bool = False) -> float:
    x, t = probe
    a.train(train), b.train(train)
    with torch.no_grad():
        ya, yb = a(x, t), b(x, t)
    a.eval(), b.eval()
    ya, yb = ya[:, : yb.shape[1]], yb[:, : ya.shape[1]]
    finite = torch.isfinite(ya)
    assert torch.equal(finite, torch.isfinite(yb))
    return float((ya[finite] - yb[finite]).abs().max())


def snapshot(net: nn.Module) -> dict:
    return {k: v.clone() for k, v in net.state_dict().items()}


def same_state(net: nn.Module, snap: dict) -> bool:
    sd = net.state_dict()
    return sd.keys() == snap.keys() and all(torch.equal(sd[k], snap[k]) for k in sd)


KINDS = [("mlp", False), ("mlp", True), ("cnn", False), ("cnn", True)]


# --- widen ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,heads", KINDS)
@pytest.mark.parametrize("init", ["copy", "zero"])
@pytest.mark.parametrize("layer", [0, 1])  # layer 1 is read by the head(s)
def test_widen_preserves_function(kind, heads, init, layer):
    net = make(kind, heads)
    probe = probe_of(net)
    snap = snapshot(net)
    r = widen(net, layer=layer, to=net.widths[layer] + 7, init=init, seed=3, probe=probe)
    assert same_state(net, snap), "the input net must not change"
    assert r.net.widths[layer] == net.widths[layer] + 7 and r.net.depth == net.depth
    assert r.report.claims_preservation
    assert gap(net, r.net, probe) <= 1e-5 and r.report.preservation_error <= 1e-5
    assert r.report.preservation_error_train is None  # train mode is measured on request only
    if kind == "cnn":  # replicated channels have replicated batch statistics: train mode preserved too
        trained = widen(net, layer=layer, to=net.widths[layer] + 7, init=init, seed=3, probe=Probe(*probe, train_mode=True))
        assert gap(net, r.net, probe, train=True) <= 1e-5 and trained.report.preservation_error_train <= 1e-5
    assert r.net(*probe).shape[1] == net(*probe).shape[1]
    assert r.report.params_after > r.report.params_before and r.report.flops_after > r.report.flops_before


def test_widen_random_is_not_claimed_to_preserve():
    net = make("mlp")
    r = widen(net, 0, 40, init="random", probe=probe_of(net))
    assert not r.report.claims_preservation and r.report.preservation_error > 1e-4
    r2 = widen(net, 0, 40, init="copy", noise=0.1, probe=probe_of(net))
    assert not r2.report.claims_preservation
    # seeded: the same call gives the same net
    r3 = widen(net, 0, 40, init="random", probe=probe_of(net))
    assert all(torch.equal(a, b) for a, b in zip(r.net.parameters(), r3.net.parameters()))


def test_widen_even_copies_each_unit_equally_and_preserves_function():
    """copies="even": a 4x widening copies every unit exactly 4 times (random copying does not),
    a 2.5x one copies each 2 or 3 times; both keep the function."""
    net = make("cnn")
    n = net.widths[1]
    for to, counts in ((4 * n, {4}), (n * 5 // 2, {2, 3})):
        r = widen(net, 1, to, copies="even", seed=5, probe=probe_of(net))
        assert r.report.preservation_error <= 1e-5
        units = r.net.blocks[1][0].weight.detach().flatten(1)
        copies = torch.tensor([(units == u).all(1).sum() for u in net.blocks[1][0].weight.detach().flatten(1)])
        assert set(copies.tolist()) == counts and int(copies.sum()) == to
    random = widen(net, 1, 4 * n, seed=5).net.blocks[1][0].weight.detach().flatten(1)
    assert len({int((random == u).all(1).sum()) for u in net.blocks[1][0].weight.detach().flatten(1)}) > 1


# --- deepen ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,heads", KINDS)
@pytest.mark.parametrize("after", [0, 1])
def test_deepen_preserves_function(kind, heads, after):
    net = make(kind, heads)
    probe = probe_of(net)
    snap = snapshot(net)
    r = deepen(net, after=after, probe=probe)
    assert same_state(net, snap)
    assert r.net.depth == net.depth + 1
    assert r.net.widths == net.widths[: after + 1] + [net.widths[after]] + net.widths[after + 1:]
    assert gap(net, r.net, probe) <= 1e-5 and r.report.preservation_error <= 1e-5
    new_block = r.net.blocks[after + 1]
    assert not any(isinstance(m, (nn.MaxPool2d, nn.MaxPool1d)) for m in new_block)


def test_deepen_cnn_with_data_stats_is_also_identity_in_train_mode():
    net = make("cnn")
    x, t = probe_of(net, n=128)
    probe = Probe(x, t, train_mode=True)
    plain = deepen(net, after=0, probe=probe).report
    fitted = deepen(net, after=0, data_x=x, probe=probe).report
    assert fitted.preservation_error <= 1e-5
    # the inserted BN's statistics are those of its input there, so batch-stat normalisation undoes itself
    assert fitted.preservation_error_train <= 1e-4 < plain.preservation_error_train


def test_deepen_refuses_non_relu_unless_identity():
    net = make("mlp", activation="tanh")
    snap = snapshot(net)
    with pytest.raises(MorphError, match="activation='identity'"):
        deepen(net, after=0)
    assert same_state(net, snap)
    r = deepen(net, after=0, activation="identity", probe=probe_of(net))
    assert r.report.preservation_error <= 1e-5 and r.net.depth == 3


# --- accounting -----------------------------------------------------------------------------


def test_params_and_flops_match_hand_formula_for_mlp():
    net = make("mlp")
    sizes = [64, 32, 24, 10]
    linears = lambda s: list(zip(s[:-1], s[1:]))
    params = lambda s: sum(i * o + o for i, o in linears(s))
    flops = lambda s: 2 * sum(i * o for i, o in linears(s))  # FlopCounterMode: 2 per multiply-add
    assert count_params(net) == params(sizes) and flops_per_sample(net) == flops(sizes)
    r = widen(net, 0, 40)
    assert (r.report.params_before, r.report.params_after) == (params(sizes), params([64, 40, 24, 10]))
    assert (r.report.flops_before, r.report.flops_after) == (flops(sizes), flops([64, 40, 24, 10]))
    r = deepen(net, 1)
    assert (r.report.params_after, r.report.flops_after) == (params([64, 32, 24, 24, 10]), flops([64, 32, 24, 24, 10]))
    assert r.report.wall_ms > 0 and r.report.preservation_error is None  # no probe, no measurement
    json.dumps(r.report.to_dict())


def test_cnn_flops_count_convolutions():
    net = CNN(SHAPE, [8], 10, batchnorm=False)  # conv 1->8, 3x3 on 8x8 'same', then head 8->10
    assert flops_per_sample(net) == 2 * (8 * 8) * (8 * 1 * 9) + 2 * 8 * 10


# --- impossible requests --------------------------------------------------------------------

REFUSALS = [
    (widen, dict(layer=0, to=32), "already has 32 units; `to` must be larger"),
    (widen, dict(layer=0, to=10), "already has 32 units"),
    (widen, dict(layer=5, to=64), "valid layers are 0, 1"),
    (widen, dict(layer=0, to=64, init="ones"), "valid inits are"),
    (widen, dict(layer=0, to=64, copies="first"), "unknown copies 'first'; valid choices are: random, even"),
    (deepen, dict(after=2), "valid layers are 0, 1"),
    (deepen, dict(after=-1), "valid layers are 0, 1"),
    (prune, dict(ratio=0.0), "strictly between 0 and 1"),
    (prune, dict(ratio=1.0), "strictly between 0 and 1"),
    (prune, dict(ratio=0.001, layer=0), "rounds to no unit"),
    (prune, dict(ratio=0.5, criterion="taylor"), "needs data"),
    (prune, dict(ratio=0.5, criterion="magic"), "valid criteria"),
    (add_head, dict(n_classes=3), "use extend_classes"),
    (extend_classes, dict(n_new=0), "positive integer"),
    (set_activation, dict(name="swish"), "valid activations"),
    (set_activation, dict(name="gelu", layers=[3]), "valid layers"),
    (replace_block, dict(layer=0, width=8), "needs inputs"),
    (replace_block, dict(layer=9, width=8, data_x=torch.zeros(4, *SHAPE)), "valid layers"),
]


@pytest.mark.parametrize("op,kwargs,match", REFUSALS, ids=[f"{op.__name__}-{i}" for i, (op, _, _) in enumerate(REFUSALS)])
def test_impossible_requests_are_refused_and_leave_the_net_untouched(op, kwargs, match):
    net = make("mlp")
    snap = snapshot(net)
    with pytest.raises(MorphError, match=match) as e:
        op(net, **kwargs)
    assert isinstance(e.value, UserError) and str(e.value).count(". ") == 0  # one sentence
    assert same_state(net, snap) and net.widths == [32, 24]


def test_prune_refuses_to_empty_a_layer():
    torch.manual_seed(0)
    net = MLP(SHAPE, [2, 64], 10)
    snap = snapshot(net)
    with pytest.raises(MorphError, match="remove all 2 units of layer 0"):
        prune(net, 0.9, layer=0)  # round(0.9 * 2) = 2
    assert same_state(net, snap)


def test_multihead_only_and_singlehead_only_ops_say_which_to_use():
    with pytest.raises(MorphError, match="use add_head"):
        extend_classes(make("mlp", heads=True), 2)
    with pytest.raises(MorphError, match=r"needs its probe as \(x, t\)"):
        widen(make("mlp", heads=True), 0, 40, probe=torch.zeros(4, *SHAPE))


# --- EWC anchors follow morphs --------------------------------------------------------------


def _anchor_and_perturb(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    fisher = {n: torch.rand(p.shape, generator=g) for n, p in net.named_parameters()}
    star = {n: p.detach().clone() for n, p in net.named_parameters()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return [(fisher, star)]


MORPHS_PRESERVING = [
    ("widen-copy", lambda n: widen(n, 0, n.widths[0] + 9)),
    ("widen-copy-last", lambda n: widen(n, 1, n.widths[1] * 3)),  # many units copied several times
    ("widen-zero", lambda n: widen(n, 1, n.widths[1] + 5, init="zero")),
    ("deepen", lambda n: deepen(n, 0)),
    ("deepen-last", lambda n: deepen(n, 1)),
]


@pytest.mark.parametrize("kind,heads", KINDS)
@pytest.mark.parametrize("name,morph", MORPHS_PRESERVING, ids=[m[0] for m in MORPHS_PRESERVING])
def test_ewc_penalty_is_unchanged_by_a_preserving_morph(kind, heads, name, morph):
    net = make(kind, heads)
    anchors = _anchor_and_perturb(net)
    before = float(ewc_penalty(net, anchors))
    r = morph(net)
    after = float(ewc_penalty(r.net, remap_anchors(anchors, r.param_map)))
    assert before > 1e-2 and abs(after - before) <= 1e-6 * max(1.0, before)


def test_remapped_importance_is_free_for_new_units_and_shared_among_copies():
    net = make("mlp")
    f = {n: torch.ones_like(p) for n, p in net.named_parameters()}
    r = widen(net, 0, 40, init="zero")
    F = r.param_map.remap_importance(f)
    assert torch.all(F["blocks.0.0.weight"][32:] == 0) and torch.all(F["blocks.1.0.weight"][:, 32:] == 0)
    assert torch.all(F["blocks.0.0.weight"][:32] == 1)
    r = widen(net, 0, 64, init="copy", seed=1)  # unit u now has k(u) copies, outgoing weights / k(u)
    idx = r.param_map.rules["blocks.0.0.weight"].dims[0].index
    k = torch.bincount(idx, minlength=32).float()
    assert k.max() > 1 and torch.equal(r.net.blocks[0][0].weight, net.blocks[0][0].weight[idx])
    F = r.param_map.remap_importance(f)
    torch.testing.assert_close(F["blocks.0.0.bias"], 1 / k[idx])  # incoming: F / k
    torch.testing.assert_close(F["blocks.1.0.weight"][0], k[idx])  # outgoing scaled 1/k: F / (k * (1/k)^2)
    r = deepen(net, 0)
    F = r.param_map.remap_importance(f)
    assert torch.all(F["blocks.1.0.weight"] == 0) and torch.equal(F["blocks.2.0.weight"], f["blocks.1.0.weight"])


@pytest.mark.parametrize("kind,heads", KINDS)
def test_param_map_anchor_reproduces_the_morphed_weights(kind, heads):
    net = make(kind, heads)
    x, t = probe_of(net)
    data = (x, torch.randint(0, 3, (len(x),)), t)
    ops = [lambda n: widen(n, 0, n.widths[0] + 5), lambda n: widen(n, 1, n.widths[1] + 5, init="random"),
           lambda n: deepen(n, 1), lambda n: prune(n, 0.3), lambda n: prune(n, 0.4, layer=1, criterion="fisher", data=data),
           lambda n: set_activation(n, "gelu")]
    ops.append((lambda n: add_head(n, 5)) if heads else (lambda n: extend_classes(n, 4)))
    for op in ops:
        r = op(net)
        old = {n: p.detach() for n, p in net.named_parameters()}
        remapped = r.param_map.remap_anchor(old)
        new = dict(r.net.named_parameters())
        assert remapped.keys() == new.keys()
        for name, p in new.items():
            torch.testing.assert_close(remapped[name], p.detach(), rtol=0, atol=0, msg=f"{r.report.op} {name}")


# --- prune ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,heads", [("mlp", False), ("cnn", True)])
@pytest.mark.parametrize("criterion", ["l1", "l2", "taylor", "fisher", "random"])
def test_prune_each_criterion_keeps_outputs_and_drops_params(kind, heads, criterion):
    net = make(kind, heads)
    x, t = probe_of(net, n=96)
    data = (x, torch.randint(0, 3, (len(x),)), t)
    snap = snapshot(net)
    r = prune(net, 0.25, criterion=criterion, data=data, probe=(x, t))
    assert same_state(net, snap)
    assert r.net(x, t).shape == net(x, t).shape
    assert sum(net.widths) - sum(r.net.widths) == round(0.25 * sum(net.widths))
    assert all(w >= 1 for w in r.net.widths)
    assert r.report.params_after < r.report.params_before and r.report.flops_after < r.report.flops_before
    assert 0 <= r.report.detail["acc_before"] <= 1 and 0 <= r.report.detail["acc_after"] <= 1
    assert r.report.preservation_error is not None and not r.report.claims_preservation
    if heads:
        assert all(h.in_features == r.net.widths[-1] for h in r.net.head.heads)


def test_prune_one_layer_only_and_lowest_l1_first():
    net = make("mlp")
    with torch.no_grad():
        net.blocks[1][0].weight[:6].mul_(1e-4)  # units 0..5 of layer 1 are tiny
    r = prune(net, 0.25, layer=1)
    assert r.net.widths == [32, 18]
    kept = r.param_map.rules["blocks.1.0.weight"].dims[0].index
    assert torch.equal(kept, torch.arange(6, 24))


def test_taylor_scores_are_the_first_order_loss_change_of_removing_a_unit():
    """Independent of autograd: scale unit u's activation by 1 +- h and take the central difference
    of each sample's loss; Taylor's score is mean_n |dL_n/dm_u| over the layer's mean of it."""
    for kind, heads in [("mlp", False), ("cnn", True)]:
        net = make(kind, heads).double()
        x, t = probe_of(net, n=40)
        x = x.double()
        y = torch.randint(0, 3, (len(x),), generator=torch.Generator().manual_seed(2))
        scores = taylor_unit_scores(net, [0, 1], (x, y, t), batch_size=16)  # chunks of 16, 16, 8

        def losses(layer, unit, scale):
            def hook(m, inp, out):
                out = out.clone()
                out[:, unit] *= scale
                return out
            handle = net.blocks[layer].register_forward_hook(hook)
            try:
                with torch.no_grad():
                    return F.cross_entropy(net(x, t), y, reduction="none")
            finally:
                handle.remove()

        h = 1e-5
        for layer in (0, 1):
            dm = torch.stack([(losses(layer, u, 1 + h) - losses(layer, u, 1 - h)) / (2 * h)
                              for u in range(net.widths[layer])], 1)  # (samples, units)
            expected = dm.abs().mean(0) / dm.abs().mean()
            assert expected.min() < 0.5 * expected.max()  # scores that differ, so their order is tested too
            assert (dm.mean(0).abs() / dm.mean(0).abs().mean() - expected).abs().max() > 0.1  # |mean| would differ
            torch.testing.assert_close(scores[layer], expected, rtol=1e-5, atol=1e-7, msg=f"{kind} {layer}")


def test_taylor_on_activations_is_the_signed_sum_of_the_weight_taylor_terms():
    """The relation prune.py's docstring relies on: for a Linear + ReLU block, sum of w * dL/dw over a
    unit's outgoing weights, and over its incoming weights and bias, both equal mean_n dL_n/dm_u."""
    net = make("mlp").double()
    x, t = probe_of(net, n=48)
    x = x.double()
    y = torch.randint(0, 10, (len(x),), generator=torch.Generator().manual_seed(3))
    dm = torch.cat([d[0] for d in mask_grads(net, [0], (x, y, t), batch_size=20)]).mean(0)
    F.cross_entropy(net(x, t), y).backward()
    inc, out = net.blocks[0][0], net.blocks[1][0]
    torch.testing.assert_close((out.weight * out.weight.grad).sum(0), dm)
    torch.testing.assert_close((inc.weight * inc.weight.grad).sum(1) + inc.bias * inc.bias.grad, dm)
    assert dm.abs().max() > 1e-3


def test_taylor_prunes_units_nothing_reads_before_useful_ones():
    net = make("mlp")
    with torch.no_grad():
        net.blocks[1][0].weight[:, :4] = 0  # nothing reads units 0..3 of layer 0 ...
        net.blocks[0][0].weight[:4] *= 10  # ... though their own weights are the largest
    x, t = probe_of(net, n=128)
    data = (x, torch.randint(0, 10, (len(x),)), t)
    ratio = 4 / sum(net.widths)
    r = prune(net, ratio, criterion="taylor", data=data)
    assert r.net.widths == [28, 24]
    assert torch.equal(r.param_map.rules["blocks.0.0.weight"].dims[0].index, torch.arange(4, 32))
    assert gap(net, r.net, (x, t)) <= 1e-5  # they did nothing, so removing them changes nothing
    magnitude = prune(net, ratio, criterion="l1", data=data).param_map.rules["blocks.0.0.weight"].dims
    assert 0 not in magnitude or set(range(4)) <= set(magnitude[0].index.tolist())  # l1 keeps them


# --- swaps ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_extend_classes_keeps_old_logits_exactly(kind):
    net = make(kind)
    x, t = probe_of(net)
    r = extend_classes(net, 3, probe=(x, t))
    with torch.no_grad():
        old, new = net(x), r.net(x)
    # the old rows are bit-identical; the logits only differ by matmul blocking over 13 vs 10 rows
    assert torch.equal(r.net.head.linear.weight[:10], net.head.linear.weight)
    assert torch.equal(r.net.head.linear.bias[:10], net.head.linear.bias)
    assert new.shape == (len(x), 13) and (new[:, :10] - old).abs().max() <= 1e-6
    assert r.report.preservation_error <= 1e-6 and r.report.params_after - r.report.params_before == 3 * (net.head.in_features + 1)


def test_add_head_leaves_old_heads_untouched():
    net = make("cnn", heads=True)
    probe = probe_of(net)
    r = add_head(net, 6, probe=probe)
    assert r.report.detail["head"] == 2 and r.net.head.sizes == [3, 4, 6]
    assert r.report.preservation_error == 0.0
    x = probe[0]
    assert r.net(x, torch.full((len(x),), 2)).shape == (len(x), 6)


def test_set_activation_changes_function_and_reports_it():
    net = make("mlp")
    r = set_activation(net, "tanh", layers=[1], probe=probe_of(net))
    assert isinstance(r.net.blocks[1][1], nn.Tanh) and isinstance(r.net.blocks[0][1], nn.ReLU)
    assert isinstance(net.blocks[1][1], nn.ReLU)  # original untouched
    assert not r.report.claims_preservation and r.report.preservation_error > 0
    assert r.report.detail["before"] == ["ReLU"]


@pytest.mark.parametrize("kind,layer", [("mlp", 0), ("mlp", 1), ("cnn", 1)])
def test_replace_block_distills_the_old_block(kind, layer):
    net = make(kind, heads=(kind == "cnn"))
    x, t = probe_of(net, n=256)
    width = net.widths[layer] * 3 // 4
    r = replace_block(net, layer, width, data_x=x, steps=150, lr=1e-2, probe=(x, t))
    d = r.report.detail
    assert r.net.widths[layer] == width and d["kept"] == "trained"
    # fewer units cannot reproduce a random block exactly, but distillation gets close on its data
    assert d["distill_mse_end"] < 0.3 * d["distill_mse_start"] and d["distill_mse_end"] < 0.1 * d["target_var"]
    assert r.report.preservation_error is not None and r.net(x, t).shape == net(x, t).shape
    assert all(p.grad is None for p in r.net.parameters())


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_replace_block_undoes_a_widen_exactly(kind):
    net = make(kind)
    x, t = probe_of(net, n=128)
    wide = widen(net, 1, 2 * net.widths[1], seed=5).net  # replicas a narrower block can represent
    r = replace_block(wide, 1, net.widths[1], data_x=x, steps=20, probe=(x, t))
    assert r.net.widths == net.widths and r.report.preservation_error <= 1e-5
    assert gap(net, r.net, (x, t)) <= 1e-5


def test_registry_knows_every_operator():
    assert MORPHS.names() == sorted(["widen", "deepen", "prune", "add_head", "extend_classes", "set_activation", "replace_block", "permute"])
    assert MORPHS.get("widen") is widen
    with pytest.raises(UserError, match="valid morph operators are"):
        MORPHS.get("shrink")


def test_operators_work_under_no_grad():
    net = make("cnn", heads=True)
    x, t = probe_of(net)
    with torch.no_grad():
        assert prune(net, 0.3, probe=(x, t)).net.widths != net.widths
        assert prune(net, 0.3, criterion="fisher", data=(x, torch.randint(0, 3, (len(x),)), t)).net.widths != net.widths
        assert replace_block(net, 0, 6, data_x=x, steps=5).net.widths[0] == 6
        assert widen(net, 0, 12, probe=(x, t)).report.preservation_error <= 1e-5
