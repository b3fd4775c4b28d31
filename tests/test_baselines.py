"""SI, MAS, A-GEM, ER-ACE, DER and GDumb: each part against Avalanche 0.6's own code or the paper's formula."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from neumeta_cl.data import TensorExperience
from neumeta_cl.errors import ConfigError, DataError
from neumeta_cl.nets import MLP
from neumeta_cl.strategies import OptimConfig, ReplayBuffer, build_strategy
from neumeta_cl.strategies.agem import agem_project
from neumeta_cl.strategies.buffer import greedy_class_balanced
from neumeta_cl.strategies.der import der_loss
from neumeta_cl.strategies.er_ace import asymmetric_cross_entropy
from neumeta_cl.strategies.mas import output_sensitivity
from tests.conftest import Boundary, end_experience


def _exp(index, n=60, classes=(0, 1), task=0, seed=0, dim=8):
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(classes).repeat(n // len(classes))
    return TensorExperience(index=index, x=torch.randn(len(y), 1, dim, generator=g), y=y,
                            t=torch.full_like(y, task), task_label=task, classes=list(classes))


def _clustered(index, classes, n=60, seed=0, dim=8):
    """Each class a Gaussian blob around its own mean: old and new classes really compete."""
    e = _exp(index, n=n, classes=classes, seed=seed, dim=dim)
    means = torch.randn(10, dim, generator=torch.Generator().manual_seed(99))
    e.x = e.x + means[e.y].unsqueeze(1)
    return e


def train_steps(module, exp, steps: int, batch_size: int = 16, lr: float = 0.1, seed: int = 0) -> None:
    """What ``ContinualModule.training_step`` does, without a Trainer: loss, backward, the parts'
    after_backward, an SGD step, the parts' after_step."""
    opt = torch.optim.SGD([p for p in module.net.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    module.net.train()
    for _ in range(steps):
        idx = torch.randperm(len(exp.y), generator=g)[:batch_size]
        loss = module.compute_loss((exp.x[idx], exp.y[idx], exp.t[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for part in module.parts:
            part.after_backward(module)
        opt.step()
        for part in module.parts:
            part.after_step(module)


def start_experience(module, exp) -> None:
    run = Boundary(module, exp)
    for part in module.parts:
        part.before_experience(run)
    module.before_experience(exp)


def learn(module, exps, steps=15):
    for exp in exps:
        start_experience(module, exp)
        train_steps(module, exp, steps, seed=exp.index)
        end_experience(module, exp)


# -- SI ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fixed", [True, False], ids=["avalanche-fixed", "avalanche-as-shipped"])
def test_si_importance_matches_avalanche_synaptic_intelligence(fixed):
    """Our path integral and Avalanche's SynapticIntelligencePlugin follow the same SGD trajectory
    (the same weights, gradients and steps) over two experiences: same Omega, same penalty.
    Avalanche as shipped keeps views of the live weights on the CPU: its Omega is all zeros."""
    import contextlib

    from avalanche.training.plugins.synaptic_intelligence import SynapticIntelligencePlugin as SIP

    from neumeta_cl.reference.avalanche import si_copies_weights

    with si_copies_weights() if fixed else contextlib.nullcontext():
        _si_against_avalanche(SIP, fixed)


def _si_against_avalanche(SIP, fixed):
    torch.manual_seed(0)
    net = MLP((1, 8), [16], n_classes=4)
    module = build_strategy({"name": "si", "si_lambda": 2.0}, net, OptimConfig(), 16, 0)
    ewc_data, syn_data, excl = (dict(), dict()), {k: dict() for k in
                                                  ("old_theta", "new_theta", "grad", "trajectory", "cum_trajectory")}, set()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for i, exp in enumerate([_exp(0, classes=(0, 1)), _exp(1, classes=(2, 3), seed=1)]):
        start_experience(module, exp)
        SIP.create_syn_data(net, ewc_data, syn_data, excl)
        SIP.init_batch(net, ewc_data, syn_data, excl)
        g = torch.Generator().manual_seed(i)
        for _ in range(12):
            idx = torch.randperm(len(exp.y), generator=g)[:16]
            SIP.pre_update(net, syn_data, excl)
            loss = module.compute_loss((exp.x[idx], exp.y[idx], exp.t[idx]))
            theirs = SIP.compute_ewc_loss(net, ewc_data, excl, "cpu", lambd=2.0)
            if fixed:
                ours = module.parts[0].loss(module, None, None, None)
                torch.testing.assert_close(torch.as_tensor(ours).detach(), theirs.detach() if i else torch.tensor(0.0),
                                           atol=1e-9, rtol=1e-5)
            opt.zero_grad()
            loss.backward()
            for part in module.parts:
                part.after_backward(module)
            opt.step()
            for part in module.parts:
                part.after_step(module)
            SIP.post_update(net, syn_data, excl)
        end_experience(module, exp)
        SIP.update_ewc_data(net, ewc_data, syn_data, 0.001, excl, 1, eps=1e-7)
        ours, star = module.parts[0].anchors[0]
        for name, p in net.named_parameters():
            torch.testing.assert_close(star[name].flatten(), ewc_data[0][name].data)
            if fixed:
                torch.testing.assert_close(ours[name].flatten(), ewc_data[1][name].data, rtol=1e-5, atol=1e-9)
            else:
                assert not bool(ewc_data[1][name].data.any())
        assert any(bool((ours[n] > 0).any()) for n in ours)


# -- MAS ---------------------------------------------------------------------------------------------

def test_mas_importance_matches_avalanche_mas():
    from avalanche.training.plugins.mas import MASPlugin

    torch.manual_seed(0)
    net = MLP((1, 8), [16], n_classes=4)
    exp = _exp(0, n=100, classes=(0, 1, 2, 3))
    ours = output_sensitivity(net, exp.x, exp.t, batch_size=32)
    strategy = SimpleNamespace(model=net, train_mb_size=32, device="cpu",
                               optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                               experience=SimpleNamespace(dataset=torch.utils.data.TensorDataset(exp.x, exp.y, exp.t)))
    theirs = MASPlugin(lambda_reg=1.0, alpha=0.5)._get_importance(strategy)
    for name, imp in theirs.items():
        torch.testing.assert_close(ours[name], imp.data, rtol=1e-5, atol=1e-8)
    assert sum(w.sum() for w in ours.values()) > 0


def test_mas_merges_importances_with_alpha():
    torch.manual_seed(0)
    module = build_strategy({"name": "mas", "mas_lambda": 1.0, "alpha": 0.25}, MLP((1, 8), [16], n_classes=4),
                            OptimConfig(), 16, 0)
    e0, e1 = _exp(0, classes=(0, 1)), _exp(1, classes=(2, 3), seed=1)
    learn(module, [e0])
    w0 = {k: v.clone() for k, v in module.parts[0].anchors[0][0].items()}
    learn(module, [e1])
    w1 = output_sensitivity(module.net, e1.x, e1.t, 16)
    for k in w0:
        torch.testing.assert_close(module.parts[0].anchors[0][0][k], 0.25 * w0[k] + 0.75 * w1[k])


# -- A-GEM -------------------------------------------------------------------------------------------

def test_agem_projection_matches_avalanche_and_the_formula():
    from avalanche.training.plugins.agem import AGEMPlugin

    torch.manual_seed(0)
    net = MLP((1, 8), [16], n_classes=4)
    n = sum(p.numel() for p in net.parameters())
    ref = torch.randn(n)
    for g in (-ref + 0.3 * torch.randn(n), ref + 0.1 * torch.randn(n)):  # conflicting, then agreeing
        plugin = AGEMPlugin(patterns_per_experience=10, sample_size=5)
        plugin.buffers, plugin.reference_gradients = [None], ref
        offset = 0
        for p in net.parameters():
            p.grad = g[offset: offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        plugin.after_backward(SimpleNamespace(model=net, device="cpu"))
        theirs = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
        ours = agem_project(g, ref)
        torch.testing.assert_close(ours, theirs)
        assert float(ours @ ref) >= -1e-4 * float(ref @ ref)  # never against the memory's gradient
    assert torch.equal(agem_project(g, ref), g)  # agreeing gradients pass unchanged


def test_agem_step_does_not_raise_the_memory_loss_to_first_order():
    torch.manual_seed(0)
    module = build_strategy({"name": "agem", "buffer_size": 40, "sample_size": 40}, MLP((1, 8), [16], n_classes=4),
                            OptimConfig(), 16, 0)
    e0, e1 = _clustered(0, (0, 1)), _clustered(1, (2, 3), seed=1)
    learn(module, [e0], steps=3)  # learned, not memorised: the memory's loss still has a gradient
    assert len(module.buffer) == 40
    start_experience(module, e1)
    x, y, t = module.buffer.data["x"], module.buffer.data["y"], module.buffer.data["t"]
    params = list(module.net.parameters())
    flat_ref = torch.cat([r.reshape(-1) for r in torch.autograd.grad(F.cross_entropy(module.net(x, t), y), params)])
    conflicts = 0
    for start in range(0, 60, 4):  # windows of the new experience; some conflict with the memory
        for p in params:
            p.grad = None
        module.compute_loss((e1.x[start: start + 16], e1.y[start: start + 16], e1.t[start: start + 16])).backward()
        g_raw = torch.cat([p.grad.reshape(-1) for p in params])
        module.projection.after_backward(module)  # sample_size = buffer_size: the whole memory, any order
        g = torch.cat([p.grad.reshape(-1) for p in params])
        if float(g_raw @ flat_ref) < 0:
            conflicts += 1
            assert abs(float(g @ flat_ref)) < 1e-5 * float(flat_ref @ flat_ref)  # projected onto the boundary
        else:
            assert torch.equal(g, g_raw)
    assert conflicts > 0 and module.projection.projected == conflicts


# -- ER-ACE ------------------------------------------------------------------------------------------

def test_asymmetric_cross_entropy_matches_avalanche_ace():
    from avalanche.training.regularization import ACECriterion

    torch.manual_seed(0)
    z_in, z_buf = torch.randn(12, 10), torch.randn(7, 10)
    y_in, y_buf = torch.tensor([4, 5, 4, 5, 7, 4, 5, 5, 4, 7, 4, 5]), torch.randint(0, 10, (7,))
    torch.testing.assert_close(asymmetric_cross_entropy(z_in, y_in, z_buf, y_buf),
                               ACECriterion()(z_in, y_in, z_buf, y_buf))


def test_er_ace_memory_takes_the_experience_before_training_and_replays_from_the_second():
    module = build_strategy({"name": "er_ace", "buffer_size": 20, "mem_batch_size": 5}, MLP((1, 8), [8], n_classes=4),
                            OptimConfig(), 16, 0)
    e0 = _exp(0, classes=(0, 1))
    start_experience(module, e0)
    assert len(module.buffer) == 20 and set(module.buffer.y.tolist()) == {0, 1}  # before any training
    batch = (e0.x[:16], e0.y[:16], e0.t[:16])
    assert len(module.training_batch(batch)[0]) == 16  # first experience: plain cross-entropy
    end_experience(module, e0)
    start_experience(module, _exp(1, classes=(2, 3), seed=1))
    assert torch.bincount(module.buffer.y).tolist() == [5, 5, 5, 5]
    x, y, t = module.training_batch(batch)
    assert len(x) == 21
    z = module.net(x, t)
    torch.testing.assert_close(module.criterion(z, y, 16), asymmetric_cross_entropy(z[:16], y[:16], z[16:], y[16:]))


# -- DER ---------------------------------------------------------------------------------------------

def test_der_loss_is_avalanche_ders_sum_and_der_has_no_label_term():
    torch.manual_seed(0)
    z_cur, y_cur, z_mem, y_mem = torch.randn(8, 5), torch.randint(0, 5, (8,)), torch.randn(6, 5), torch.randint(0, 5, (6,))
    stored, mask = torch.randn(6, 5), torch.ones(6, 5, dtype=torch.bool)
    expected = (F.cross_entropy(z_cur, y_cur) + 0.3 * F.mse_loss(z_mem, stored) + 0.7 * F.cross_entropy(z_mem, y_mem))
    torch.testing.assert_close(der_loss(z_cur, y_cur, z_mem, y_mem, stored, mask, 0.3, 0.7), expected)
    torch.testing.assert_close(der_loss(z_cur, y_cur, z_mem, y_mem, stored, mask, 0.3, None),
                               F.cross_entropy(z_cur, y_cur) + 0.3 * F.mse_loss(z_mem, stored))
    mask[:, 3:] = False  # columns the stored logits do not cover are left out
    torch.testing.assert_close(der_loss(z_cur, y_cur, z_mem, y_mem, stored, mask, 1.0, None),
                               F.cross_entropy(z_cur, y_cur) + F.mse_loss(z_mem[:, :3], stored[:, :3]))


def test_der_stores_the_logits_of_the_net_that_just_learned_the_experience():
    torch.manual_seed(0)
    module = build_strategy({"name": "der", "buffer_size": 30, "mem_batch_size": 8}, MLP((1, 8), [8], n_classes=4),
                            OptimConfig(), 16, 0)
    e0 = _exp(0, classes=(0, 1))
    learn(module, [e0])
    data = module.buffer.data
    module.net.eval()
    with torch.no_grad():
        torch.testing.assert_close(data["logits"], module.net(data["x"], data["t"]))
    assert bool(data["mask"].all()) and len(module.buffer) == 30
    batch = (e0.x[:16], e0.y[:16], e0.t[:16])
    x, y, t = module.training_batch(batch)
    z = module.net(x, t)
    stored, mask = module._stored
    torch.testing.assert_close(module.criterion(z, y, 16), der_loss(z[:16], y[:16], z[16:], y[16:], stored, mask, 0.1, 0.5))


# -- GDumb -------------------------------------------------------------------------------------------

def test_greedy_sampler_balances_classes_and_keeps_arrivals_in_their_slots():
    g = torch.Generator().manual_seed(0)
    labels = [0] * 30 + [1] * 30
    kept = greedy_class_balanced([], labels, 20, g)
    # the first 20 arrivals fill the memory; then each class-1 arrival evicts a random class-0 row
    # until the classes are even, and later arrivals of a largest class are not stored
    assert sorted(labels[r] for r in kept) == [0] * 10 + [1] * 10
    assert sorted(r for r in kept if labels[r] == 1) == list(range(30, 40))
    assert all(r < 20 for r in kept if labels[r] == 0)
    buf = ReplayBuffer(20, "greedy_class_balanced", seed=0)
    buf.update(_exp(0, n=100, classes=(0, 1)))
    assert torch.bincount(buf.y).tolist() == [10, 10]
    buf.update(_exp(1, n=100, classes=(2, 3), seed=1))
    assert torch.bincount(buf.y).tolist() == [5, 5, 5, 5]
    buf.update(_exp(2, n=9, classes=(4,), seed=2))  # a small class takes what it can; the largest give way
    counts = torch.bincount(buf.y).tolist()
    assert counts[4] == 4 and sum(counts) == 20 and max(counts) - min(counts) <= 1


def test_experience_balanced_buffer_shares_slots_among_experiences():
    buf = ReplayBuffer(30, "experience_balanced", seed=0)
    for i in range(3):
        buf.update(_exp(i, n=100, classes=(i,), seed=i))
    assert torch.bincount(buf.data["exp"]).tolist() == [10, 10, 10]


def test_gdumb_trains_on_its_memory_from_the_initial_weights():
    torch.manual_seed(0)
    module = build_strategy({"name": "gdumb", "buffer_size": 24, "epochs": 3}, MLP((1, 8), [8], n_classes=4),
                            OptimConfig(), 16, 0)
    init = {n: p.detach().clone() for n, p in module.net.named_parameters()}
    stream = SimpleNamespace(train=[_exp(0, n=100, classes=(0, 1)), _exp(1, n=100, classes=(2, 3), seed=1)])
    assert module.epochs(1) == 3
    e0 = module.train_data(stream, 0)
    assert len(e0.y) == 24 and torch.bincount(e0.y).tolist() == [12, 12]
    learn(module, [e0])
    assert not torch.equal(module.net.blocks[0][0].weight, init["blocks.0.0.weight"])
    e1 = module.train_data(stream, 1)
    assert module.train_data(stream, 1).y.tolist() == e1.y.tolist()  # asked twice: one update
    assert torch.bincount(e1.y).tolist() == [6, 6, 6, 6]
    start_experience(module, e1)
    for n, p in module.net.named_parameters():
        assert torch.equal(p, init[n]), n


# -- bad input ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg, match", [
    ({"name": "der", "alpha": 0.0}, "strategy.alpha must be positive, got 0.0"),
    ({"name": "der", "alpha": -1.0}, "strategy.alpha must be positive"),
    ({"name": "der", "beta": 0.0}, "set strategy.beta=null for DER"),
    ({"name": "der", "beta": -0.5}, "strategy.beta must be positive"),
    ({"name": "der", "buffer_size": 0}, "strategy.buffer_size must be positive"),
    ({"name": "agem", "buffer_size": -3}, "strategy.buffer_size must be positive"),
    ({"name": "er_ace", "buffer_size": 0}, "strategy.buffer_size must be positive"),
    ({"name": "gdumb", "buffer_size": 0}, "strategy.buffer_size must be positive"),
    ({"name": "si", "si_lambda": 0.0}, "strategy.si_lambda must be positive"),
    ({"name": "si", "si_lambda": -1.0}, "strategy.si_lambda must be positive"),
    ({"name": "mas", "mas_lambda": 0.0}, "strategy.mas_lambda must be positive"),
    ({"name": "mas", "mas_lambda": -2.0}, "strategy.mas_lambda must be positive"),
    ({"name": "agem", "buffer_size": 50, "sample_size": 64}, r"sample_size \(64\) is larger than strategy.buffer_size \(50\)"),
    ({"name": "gdumb", "policy": "fifo"}, "valid policies are: class_balanced, experience_balanced"),
])
def test_bad_baseline_configs_are_clear_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        build_strategy(cfg, MLP((1, 8), [8], n_classes=2), OptimConfig(), 16, 0)


def test_gdumb_on_a_stream_without_class_labels_is_a_data_error():
    module = build_strategy({"name": "gdumb", "buffer_size": 20}, MLP((1, 8), [8], n_classes=2), OptimConfig(), 16, 0)
    e = _exp(0)
    e.y = e.y.float() + 0.5  # regression targets
    with pytest.raises(DataError, match="needs integer class labels, but experience 0 has torch.float32 targets"):
        module.train_data(SimpleNamespace(train=[e]), 0)


@pytest.mark.parametrize("overrides, message", [
    (["strategy=der", "strategy.alpha=0"], "strategy.alpha must be positive, got 0"),
    (["strategy=der", "strategy.alpha=-0.1"], "strategy.alpha must be positive, got -0.1"),
    (["strategy=der", "strategy.beta=0"], "strategy.beta must be positive, got 0; set strategy.beta=null for DER"),
    (["strategy=der", "strategy.beta=-1"], "strategy.beta must be positive, got -1"),
    (["strategy=agem", "strategy.buffer_size=0"], "strategy.buffer_size must be positive, got 0"),
    (["strategy=gdumb", "strategy.buffer_size=-5"], "strategy.buffer_size must be positive, got -5"),
    (["strategy=er_ace", "strategy.buffer_size=0"], "strategy.buffer_size must be positive"),
    (["strategy=si", "strategy.si_lambda=0"], "strategy.si_lambda must be positive, got 0"),
    (["strategy=si", "strategy.si_lambda=-3"], "strategy.si_lambda must be positive, got -3"),
    (["strategy=mas", "strategy.mas_lambda=0"], "strategy.mas_lambda must be positive, got 0"),
    (["strategy=mas", "strategy.mas_lambda=-1"], "strategy.mas_lambda must be positive, got -1"),
    (["strategy=agem", "strategy.sample_size=600"],
     "strategy.sample_size (600) is larger than strategy.buffer_size (500): A-GEM draws its reference batch"),
    (["strategy=der", "strategy.alpha=abc"], "strategy.alpha must be positive, got abc"),
])
def test_bad_baseline_input_is_one_sentence_and_exit_2(overrides, message, capsys, tmp_path):
    from neumeta_cl.cli import main

    code = main(["run", *overrides, "logger.mode=disabled", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # refused before a run folder exists


def test_gdumb_on_a_stream_without_class_labels_exits_2_before_training(capsys, tmp_path, monkeypatch):
    import dataclasses

    import neumeta_cl.run
    from neumeta_cl.cli import main

    real = neumeta_cl.run.build_stream_from

    def regression_targets(cfg):  # the digits stream with float targets: no class labels
        s = real(cfg)
        return dataclasses.replace(s, train=[dataclasses.replace(e, y=e.y.float()) for e in s.train])

    monkeypatch.setattr(neumeta_cl.run, "build_stream_from", regression_targets)
    code = main(["run", "benchmark=split_digits", "strategy=gdumb", "logger.mode=disabled", "train.progress_bar=false",
                 f"output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "needs integer class labels, but experience 0 has torch.float32 targets" in err
    [results] = tmp_path.glob("*/results.json")
    assert '"experiences": []' in results.read_text().replace("\n", "").replace("  ", "")  # nothing trained


# -- morphs: importances, stored logits and initial weights follow every operator ---------------------

from neumeta_cl.morph import add_head, deepen, extend_classes, widen  # noqa: E402
from neumeta_cl.strategies.der import dark_replay_loss  # noqa: E402

PRESERVING = {
    "widen-copy": lambda n: widen(n, 0, n.widths[0] + 7),
    "widen-copy-x3": lambda n: widen(n, 1, n.widths[1] * 3),
    "widen-zero": lambda n: widen(n, 1, n.widths[1] + 5, init="zero"),
    "deepen": lambda n: deepen(n, 0),
    "deepen-last": lambda n: deepen(n, 1),
}


def _penalty(module) -> float:
    return float(module.parts[0].loss(module, None, None, None))


@pytest.mark.parametrize("morph", PRESERVING, ids=list(PRESERVING))
@pytest.mark.parametrize("strategy", ["si", "mas"])
@pytest.mark.parametrize("heads", [None, [2, 2]], ids=["single-head", "multi-head"])
def test_si_and_mas_penalties_are_unchanged_by_a_preserving_morph(strategy, heads, morph):
    torch.manual_seed(0)
    net = MLP((1, 8), [16, 12], n_classes=4, heads=heads)
    # SI unclipped, so its weights are not all at the clip (which would test less), and with a damping
    # eps that keeps them finite-sized: with 1e-7, a weight that hardly moved gets Omega ~ 1e4, and
    # float32 rounding of its copies' w/3 alone then moves the penalty by ~1e-3 (float64: ~1e-12)
    cfg = ({"name": "si", "si_lambda": 1.0, "clip": None, "eps": 1e-3} if strategy == "si"
           else {"name": "mas", "mas_lambda": 1.0})
    module = build_strategy(cfg, net, OptimConfig(), 16, 0)
    e1 = _clustered(1, (0, 1) if heads else (2, 3), seed=1)
    if heads:
        e1.t[:], e1.task_label = 1, 1
    learn(module, [_clustered(0, (0, 1)), e1], steps=10)
    for e in module.parts[0].anchors:  # the importances are real, and not all at one value
        assert len(torch.cat([w.flatten() for w in e[0].values()]).unique()) > 10
    with torch.no_grad():  # away from the anchor, so the penalty is not 0
        for p in module.net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    before = _penalty(module)
    r = PRESERVING[morph](module.net)
    module.replace_net(r.net, r.param_map)
    after = _penalty(module)
    assert before > 1e-3 and abs(after - before) <= 1e-6 * max(1.0, before), (before, after)
    learn(module, [_clustered(2, (0, 1) if heads else (0, 3), seed=2)], steps=3)  # trains on
    params = dict(module.net.named_parameters())
    for omega, star in module.parts[0].anchors:  # the new anchor describes the morphed net
        assert all(omega[n].shape == star[n].shape == params[n].shape for n in omega)


def _der_memory_loss(module) -> float:
    d = module.buffer.data
    module.net.eval()
    with torch.no_grad():
        return float(dark_replay_loss(module.net(d["x"], d["t"]), d["logits"], d["mask"]))


@pytest.mark.parametrize("morph", ["extend_classes", "add_head", "widen", "deepen"])
def test_der_stored_logits_follow_the_morph(morph):
    torch.manual_seed(0)
    heads = [2, 2] if morph == "add_head" else None
    net = MLP((1, 8), [16], n_classes=4, heads=heads)
    module = build_strategy({"name": "der", "buffer_size": 40, "mem_batch_size": 8}, net, OptimConfig(), 16, 0)
    e1 = _clustered(1, (0, 1), seed=1) if heads else _clustered(1, (2, 3), seed=1)
    if heads:
        e1.t[:], e1.task_label = 1, 1
    learn(module, [_clustered(0, (0, 1)), e1], steps=5)
    with torch.no_grad():
        for p in module.net.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    before = _der_memory_loss(module)
    op = {"extend_classes": lambda n: extend_classes(n, 3), "add_head": lambda n: add_head(n, 3),
          "widen": lambda n: widen(n, 0, 24), "deepen": lambda n: deepen(n, 0)}[morph]
    r = op(module.net)
    module.replace_net(r.net, r.param_map)
    assert abs(_der_memory_loss(module) - before) <= 1e-6 * max(1.0, before) and before > 1e-3
    d = module.buffer.data
    if morph == "extend_classes":  # the new class columns had no value when the samples were stored
        assert d["logits"].shape[1] == 7 and not bool(d["mask"][:, 4:].any()) and bool(d["mask"][:, :4].all())
    # the next experience brings the new classes / task; its rows and the old ones share one memory
    e2 = _clustered(2, (4, 5, 6), n=60, seed=2) if morph == "extend_classes" else _clustered(2, (0, 1, 2), seed=2)
    if morph == "add_head":
        e2.t[:], e2.task_label = 2, 2
    elif morph != "extend_classes":
        e2 = _clustered(2, (0, 3), seed=2)
    learn(module, [e2], steps=3)
    d = module.buffer.data
    assert set(d["exp"].tolist()) == {0, 1, 2} and d["logits"].shape == d["mask"].shape
    loss = module.compute_loss((d["x"][:4], d["y"][:4], d["t"][:4]))  # 4 current + 8 replayed with their logits
    assert module._stored[0].shape == (8, d["logits"].shape[1]) and float(loss) > 0


def test_gdumb_restarts_from_the_initial_weights_carried_through_a_widen():
    torch.manual_seed(0)
    module = build_strategy({"name": "gdumb", "buffer_size": 24, "epochs": 2}, MLP((1, 8), [8], n_classes=4),
                            OptimConfig(), 16, 0)
    init_net = __import__("copy").deepcopy(module.net)
    stream = SimpleNamespace(train=[_exp(0, n=100, classes=(0, 1)), _exp(1, n=100, classes=(2, 3), seed=1)])
    learn(module, [module.train_data(stream, 0)])
    r = widen(module.net, 0, 13)
    module.replace_net(r.net, r.param_map)
    start_experience(module, module.train_data(stream, 1))  # the reset
    x = torch.randn(20, 1, 8)
    with torch.no_grad():
        torch.testing.assert_close(module.net.eval()(x), init_net.eval()(x), atol=1e-5, rtol=1e-5)
    assert module.net.widths == [13]


def test_agem_projects_after_a_widen():
    torch.manual_seed(0)
    module = build_strategy({"name": "agem", "buffer_size": 40, "sample_size": 20}, MLP((1, 8), [16], n_classes=4),
                            OptimConfig(), 16, 0)
    learn(module, [_clustered(0, (0, 1))], steps=3)
    r = widen(module.net, 0, 24)
    module.replace_net(r.net, r.param_map)
    learn(module, [_clustered(1, (2, 3), seed=1)], steps=6)  # reference gradients of the widened net
    assert module.projection.steps == 6 and module.projection.projected > 0
