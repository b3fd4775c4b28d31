"""Permutation alignment, REPAIR, paths and barriers (neumeta_cl.landscape), on small real nets."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neumeta_cl.data import load_dataset
from neumeta_cl.errors import UserError
from neumeta_cl.landscape import (AlignError, CurvePath, FisherPath, FlowPath, LinearPath, align, diagonal_fisher,
                                  evaluate_path, fisher_interpolate, interpolate, loss_and_accuracy, loss_barrier,
                                  make_path, repair, reset_batchnorm_, train_bend, train_flow, weight_matching)
from neumeta_cl.landscape.align import correlation
from neumeta_cl.landscape.repair import unit_statistics
from neumeta_cl.morph import MORPHS, permute, permute_net
from neumeta_cl.morph.permute import permute_weights
from neumeta_cl.hypernet.smoothing import layer_weights, permute_units
from neumeta_cl.nets import CNN, MLP
from neumeta_cl.nets.structure import net_state
from tests.test_morph import KINDS, gap, make, probe_of


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits")
    return d.x_train, d.y_train, d.x_test, d.y_test


def trained(kind: str, seed: int, data, steps: int = 300, widths=None, heads=None) -> torch.nn.Module:
    x, y = data[0], data[1]
    torch.manual_seed(seed)
    net = (MLP((1, 8, 8), widths or [64, 64], 10, heads=heads) if kind == "mlp"
           else CNN((1, 8, 8), widths or [16, 32], 10, heads=heads))
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    t = torch.zeros(len(y), dtype=torch.long)
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(y), (64,), generator=g)
        loss = F.cross_entropy(net(x[idx], t[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def mlp_pair(digits):
    return trained("mlp", 0, digits), trained("mlp", 1, digits)


# --- the one permutation code path ----------------------------------------------------------


@pytest.mark.parametrize("kind,heads", KINDS)
def test_permute_operator_preserves_function_and_moves_bn_with_channels(kind, heads):
    net = make(kind, heads)
    probe = probe_of(net)
    g = torch.Generator().manual_seed(3)
    orders = [torch.randperm(w, generator=g) for w in net.widths]
    r = MORPHS.get("permute")(net, orders, probe=probe)
    assert r.report.claims_preservation and r.report.preservation_error <= 1e-5
    assert gap(net, r.net, probe) <= 1e-5 and gap(net, r.net, probe, train=True) <= 1e-5
    if kind == "cnn":  # BatchNorm's running statistics moved with their channels
        bn_old, bn_new = net.blocks[0][1], r.net.blocks[0][1]
        assert torch.equal(bn_new.running_mean, bn_old.running_mean[orders[0]])
        assert torch.equal(bn_new.weight, bn_old.weight[orders[0]])
    # anchors follow the ParamMap: the remapped old weights are the new weights
    anchor = r.param_map.remap_anchor({n: p.detach() for n, p in net.named_parameters()})
    assert all(torch.equal(anchor[n], p) for n, p in r.net.named_parameters())


def test_permute_refuses_what_is_not_a_permutation():
    net = make("mlp")
    with pytest.raises(UserError, match="exactly once"):
        permute(net, [torch.zeros(32, dtype=torch.long), None])
    with pytest.raises(UserError, match="one order"):
        permute(net, [None])


def test_tsp_smoothing_goes_through_the_same_permutation():
    net = make("cnn")
    w = layer_weights(net)
    order = torch.randperm(w[0][0].shape[0])
    a, b = permute_units(w, 0, order), permute_weights(w, 0, order)
    assert all(torch.equal(p, q) for (p, _), (q, _) in zip(a, b))
    # and it is the same relabelling the net-level code applies
    w2 = layer_weights(permute_net(net, [order, None]))
    assert all(torch.allclose(p, q, atol=1e-6) for (p, _), (q, _) in zip(a, w2))


# --- alignment ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,heads", KINDS)
@pytest.mark.parametrize("method", ["weights", "activations"])
def test_align_is_the_same_function_and_closer(kind, heads, method):
    a, b = make(kind, heads, seed=0), make(kind, heads, seed=1)
    x, t = probe_of(a, 256)
    # scramble b so that there is something to undo: a relabelled copy of a, plus noise
    g = torch.Generator().manual_seed(5)
    b = permute_net(a, [torch.randperm(w, generator=g) for w in a.widths])
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    res = align(a, b, method=method, data=(x, t))
    assert gap(b, res.net, (x, t)) <= 1e-5 and gap(b, res.net, (x, t), train=True) <= 1e-5
    assert res.distance_after < 0.2 * res.distance_before
    if heads:  # heads are never permuted
        assert all(torch.equal(h1.bias, h2.bias) for h1, h2 in zip(b.head.heads, res.net.head.heads))


def test_weight_matching_recovers_a_known_permutation_exactly():
    a = make("mlp", seed=0)
    g = torch.Generator().manual_seed(2)
    orders = [torch.randperm(w, generator=g) for w in a.widths]
    b = permute_net(a, orders)
    found, sweeps = weight_matching(a, b)
    aligned = permute_net(b, found)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), aligned.parameters()))
    assert sweeps >= 2  # the last sweep confirms that nothing changes


def test_align_of_trained_nets_lowers_the_barrier(digits, mlp_pair):
    a, b = mlp_pair
    test = (digits[2], digits[3])
    naive = evaluate_path(LinearPath(a, b), test, n=9).barrier
    for method in ("weights", "activations"):
        b2 = align(a, b, method, data=digits[0][:512]).net
        aligned = evaluate_path(LinearPath(a, b2), test, n=9).barrier
        assert aligned < 0.5 * naive, (method, naive, aligned)


def test_align_refuses_other_structures_and_methods():
    a, b = make("mlp"), MLP((1, 8, 8), [32, 16], 10)
    with pytest.raises(AlignError, match="differ in structure"):
        align(a, b)
    with pytest.raises(AlignError, match="valid methods are: weights, activations"):
        align(a, a, method="sinkhorn")
    with pytest.raises(AlignError, match="needs data"):
        align(a, a, method="activations")


def test_correlation_matches_numpy():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 3, generator=g), torch.randn(50, 4, generator=g)
    ref = np.corrcoef(a.T.numpy(), b.T.numpy())[:3, 3:]
    assert np.allclose(correlation(a, b).numpy(), ref, atol=1e-6)


# --- REPAIR ---------------------------------------------------------------------------------


def test_repair_gives_units_the_interpolated_statistics(digits, mlp_pair):
    a, b = mlp_pair
    b = align(a, b, "weights").net
    x = digits[0][:512]
    mid = LinearPath(a, b).net(0.5)
    fixed = repair(mid, a, b, 0.5, x)
    sa, sb, sf = unit_statistics(a, x), unit_statistics(b, x), unit_statistics(fixed, x)
    for (ma, da), (mb, db), (mf, df) in zip(sa, sb, sf):
        assert torch.allclose(mf, (ma + mb) / 2, atol=1e-4) and torch.allclose(df, (da + db) / 2, atol=1e-4)
    # the plain midpoint's units had lost variance (the collapse REPAIR undoes)
    sm = unit_statistics(mid, x)
    assert all(float(dm.mean()) < float(((da + db) / 2).mean()) for (_, dm), (_, da), (_, db) in zip(sm, sa, sb))


def test_batchnorm_reset_gives_exact_statistics():
    net = make("cnn")
    x, _ = probe_of(net, 128)
    reset_batchnorm_(net, x)
    h = net.blocks[0][0](x)
    bn = net.blocks[0][1]
    assert torch.allclose(bn.running_mean, h.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, h.var((0, 2, 3), unbiased=True), atol=1e-4)


# --- paths and barriers ---------------------------------------------------------------------


def test_loss_barrier_formula():
    assert loss_barrier([1.0, 3.0, 2.0, 0.5]) == pytest.approx(3.0 - 0.75)
    assert loss_barrier([1.0, 0.5, 1.0]) == 0.0  # the endpoints count: a barrier is never negative


@pytest.mark.parametrize("kind", ["bezier", "polychain"])
def test_curve_formulas_and_endpoints(mlp_pair, kind):
    a, b = mlp_pair
    g = torch.Generator().manual_seed(0)
    bend = {n: torch.randn(p.shape, generator=g) for n, p in a.named_parameters()}
    c = CurvePath(a, b, kind, bend)
    n = "blocks.0.0.weight"
    pa, pb = dict(a.named_parameters())[n].detach(), dict(b.named_parameters())[n].detach()
    assert torch.allclose(c.params(0.0)[n], pa, atol=1e-6) and torch.allclose(c.params(1.0)[n], pb, atol=1e-6)
    mid = (pa / 4 + bend[n] / 2 + pb / 4) if kind == "bezier" else bend[n]
    assert torch.allclose(c.params(0.5)[n], mid, atol=1e-6)


def test_trained_bezier_is_lower_than_the_line_and_the_flow_starts_on_it(digits, mlp_pair):
    a, b = mlp_pair
    train = (digits[0], digits[1], torch.zeros(len(digits[1]), dtype=torch.long))
    test = (digits[2], digits[3])
    line = evaluate_path(LinearPath(a, b), test, n=9).barrier
    curve = train_bend(CurvePath(a, b, "bezier"), train, steps=300, lr=0.05, batch_size=128)
    bez = evaluate_path(curve, test, n=9)
    assert bez.barrier < 0.5 * line
    flow = FlowPath.from_curve(curve)
    n = "blocks.1.0.weight"
    for t in (0.0, 0.3, 1.0):  # before training, the flow is the curve; it always ends at A and B
        assert torch.allclose(flow.params(t)[n], curve.params(t)[n], atol=1e-5)
    train_flow(flow, train, steps=20, lr=0.05)
    assert torch.allclose(flow.params(1.0)[n], dict(b.named_parameters())[n], atol=1e-6)
    assert torch.allclose(flow.params(0.0)[n], dict(a.named_parameters())[n], atol=1e-6)
    assert flow.train_info["field_evaluations"] > 0


def test_fisher_interpolation_formula_and_weights(digits, mlp_pair):
    a, b = mlp_pair
    assert fisher_interpolate(torch.tensor(1.0), torch.tensor(3.0), torch.tensor(3.0), torch.tensor(1.0), 0.5,
                              eps=0) == pytest.approx((3 * 1 + 1 * 3) / 4)
    fa = diagonal_fisher(a, digits[0][:64])
    assert all((f >= 0).all() for f in fa.values()) and sum(float(f.sum()) for f in fa.values()) > 0
    path = FisherPath(a, b, fa, diagonal_fisher(b, digits[0][:64], seed=1))
    n = "head.linear.weight"
    assert torch.equal(path.params(0.0)[n], dict(a.named_parameters())[n].detach())
    assert torch.equal(path.params(1.0)[n], dict(b.named_parameters())[n].detach())


def test_bn_paths_recompute_statistics_at_each_t(digits):
    a, b = trained("cnn", 0, digits, steps=100), trained("cnn", 1, digits, steps=100)
    b = align(a, b, "weights").net
    x = digits[0][:512]
    mid = LinearPath(a, b).net(0.5, bn_data=x)
    h = mid.blocks[0][0](x)
    assert torch.allclose(mid.blocks[0][1].running_mean, h.mean((0, 2, 3)), atol=1e-4)
    test = (digits[2], digits[3])
    no_reset = evaluate_path(LinearPath(a, b), test, n=5).barrier
    reset = evaluate_path(LinearPath(a, b), test, n=5, bn_data=x).barrier
    assert reset < no_reset


def test_interpolate_gives_a_deployable_net_from_saved_states(tmp_path, digits, mlp_pair):
    a, b = mlp_pair
    torch.save(net_state(a), tmp_path / "a.pt")
    net = interpolate(tmp_path / "a.pt", net_state(b), 0.25, path="linear", align="weights")
    b2 = align(a, b, "weights").net
    ref = LinearPath(a, b2).net(0.25)
    x = digits[2][:32]
    assert torch.allclose(net(x), ref(x), atol=1e-6)
    at_b = interpolate(a, b, 1.0, align="weights")
    assert torch.allclose(at_b(x), b(x), atol=1e-5)  # the aligned B is B's function
    with pytest.raises(UserError, match="t must lie in"):
        interpolate(a, b, 1.5)
    with pytest.raises(UserError, match="not a saved network"):
        interpolate({"weights": 1}, b, 0.5)
    with pytest.raises(UserError, match="fitted to data"):
        interpolate(a, b, 0.5, path="bezier")
    with pytest.raises(UserError, match="valid paths are"):
        make_path(a, b, "spline")
