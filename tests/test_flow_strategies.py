"""Paths in a stream: mode-connectivity SGD (strategy=flow) and weight interpolation (strategy=clewi)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from neumeta_cl.cli import main
from neumeta_cl.data import TensorExperience, build_stream
from neumeta_cl.errors import ConfigError
from neumeta_cl.landscape import LinearPath, align, loss_and_accuracy
from neumeta_cl.landscape.mode_connectivity import lowest_point, mcsgd_point
from neumeta_cl.nets import MLP
from neumeta_cl.strategies import OptimConfig, build_strategy
from neumeta_cl.tracking.results import load_results
from tests.conftest import Boundary
from tests.test_landscape import trained


@pytest.fixture(scope="module")
def stream():
    return build_stream("digits", "rotated", 3, 0, rotations=[0.0, 30.0, 60.0], train_per_experience=600)


def line_objective(w, prev, curr, memory, current, alphas=(0.0, 0.25, 0.5, 0.75, 1.0)):
    net = copy.deepcopy(prev)
    total = 0.0
    for a in alphas:
        for end, data in ((prev, memory), (curr, current)):
            with torch.no_grad():
                for (n, p), q in zip(net.named_parameters(), end.parameters()):
                    p.copy_(q + a * (w[n] - q))
            total += loss_and_accuracy(net, *data)[0]
    return total / len(alphas)


def test_mcsgd_point_starts_on_the_line_and_lowers_both_line_losses(stream):
    e0, e1 = stream.train[0], stream.train[1]
    prev = trained("mlp", 0, (e0.x, e0.y), steps=200)
    curr = copy.deepcopy(prev)
    curr.load_state_dict(trained("mlp", 0, (e1.x, e1.y), steps=200).state_dict())
    memory, current = (e0.x[:100], e0.y[:100], e0.t[:100]), (e1.x, e1.y, e1.t)
    start, info = mcsgd_point(prev, curr, memory, current, init_position=0.1, epochs=0)
    n = "blocks.0.0.weight"
    pp, pc = dict(prev.named_parameters())[n], dict(curr.named_parameters())[n]
    assert info["steps"] == 0 and torch.allclose(start[n], pp + 0.1 * (pc - pp))
    w, info = mcsgd_point(prev, curr, memory, current, init_position=0.1, epochs=20, batch_size=50, lr=0.05)
    assert info["steps"] == 40
    assert line_objective(w, prev, curr, memory, current) < line_objective(start, prev, curr, memory, current)


def test_lowest_point_is_the_minimum_of_the_grid(stream):
    e0 = stream.train[0]
    a, b = trained("mlp", 0, (e0.x, e0.y), steps=150), trained("mlp", 1, (e0.x, e0.y), steps=150)
    memory = (e0.x[:200], e0.y[:200], e0.t[:200])
    t, net, losses = lowest_point(LinearPath(a, b), memory, grid=5)
    assert len(losses) == 5 and losses[[0.0, 0.25, 0.5, 0.75, 1.0].index(t)] == min(losses)
    assert loss_and_accuracy(net, *memory)[0] == pytest.approx(min(losses))


def run_events(strategy, stream, steps=60, n=2, starts=None):
    """Drive a strategy through the loop's events on the first ``n`` experiences (a few SGD steps
    each); ``starts``, when given, collects a copy of the net each experience starts training from."""
    records = []
    for exp in stream.train[:n]:
        run = Boundary(strategy, exp)
        run.stream = stream
        for part in strategy.parts:
            part.before_experience(run)
        strategy.before_experience(exp)
        if starts is not None:
            starts.append(copy.deepcopy(strategy.net))
        opt = torch.optim.SGD(strategy.net.parameters(), lr=0.05)
        g = torch.Generator().manual_seed(exp.index)
        for _ in range(steps):
            idx = torch.randint(len(exp), (32,), generator=g)
            loss = F.cross_entropy(strategy.net(exp.x[idx], exp.t[idx]), exp.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        records.append(copy.deepcopy(strategy.net))
        for part in strategy.parts:
            part.after_training(run)
        strategy.after_training(exp)
    return records


def test_clewi_is_the_halfway_point_of_the_aligned_previous_net(stream):
    torch.manual_seed(0)
    s = build_strategy({"name": "clewi", "buffer_size": 100}, MLP((1, 8, 8), [32, 32], 10), OptimConfig(), 32, 0)
    _, trained_1 = run_events(s, stream)
    start_1 = s.interpolation.previous  # the net experience 1 started from
    from neumeta_cl.nets.structure import load_net

    old = load_net(start_1)
    expected = LinearPath(trained_1, align(trained_1, old, "weights", seed=0 + 1).net).net(0.5)
    x = stream.test[1].x[:64]
    assert torch.allclose(s.net(x), expected(x), atol=1e-5)
    [move] = s.report().morphs
    assert move["op"] == "clewi" and move["detail"]["alpha"] == 0.5 and len(move["acc_after"]) == 2


def test_flow_moves_after_each_experience_and_records_a_morph(stream):
    torch.manual_seed(0)
    s = build_strategy({"name": "flow", "buffer_size": 100, "line_epochs": 2}, MLP((1, 8, 8), [32, 32], 10),
                       OptimConfig(), 32, 0)
    _, trained_1 = run_events(s, stream)
    assert s.connect.anchor is not None
    moved = sum(float((p - q).abs().sum()) for p, q in zip(s.net.parameters(), trained_1.parameters()))
    assert moved > 0  # the continual solution is not the new minimum
    [move] = s.report().morphs
    assert move["op"] == "flow_mcsgd" and move["detail"]["steps"] == 4  # 2 epochs x ceil(100 earlier samples / 64)
    assert move["params_before"] == move["params_after"] and move["acc_seen_after"] is not None
    anchor = s.connect.anchor["weights"]
    assert all(torch.equal(anchor[n], p) for n, p in s.net.state_dict().items())  # the next path starts here


def test_flow_train_from_sequential_trains_from_the_last_minimum(stream):
    """train_from=sequential: each experience trains from the minimum the previous one reached, while
    the net evaluated after each experience (and each path's start) is the connected point."""
    torch.manual_seed(0)
    s = build_strategy({"name": "flow", "buffer_size": 100, "train_from": "sequential"}, MLP((1, 8, 8), [32], 10),
                       OptimConfig(), 32, 0)
    starts = []
    trained = run_events(s, stream, steps=30, n=3, starts=starts)
    same = lambda a, b: all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert same(starts[1], trained[0]) and same(starts[2], trained[1])
    assert not same(s.net, trained[2])  # after the move, the net is the connected point
    assert all(torch.equal(s.connect.anchor["weights"][n], p) for n, p in s.net.state_dict().items())
    assert len(s.connect.moves) == 2
    s2 = build_strategy({"name": "flow", "buffer_size": 100}, MLP((1, 8, 8), [32], 10), OptimConfig(), 32, 0)
    s2.connect.load_state_dict(s.connect.state_dict())  # the last minimum survives a checkpoint
    assert all(torch.equal(s2.connect.trained[k], v) for k, v in trained[2].state_dict().items())


def test_flow_train_replay_adds_the_memory_to_each_batch(stream):
    """train_replay: each training batch carries mem_batch_size memory samples of earlier experiences
    (as replay); without it a batch is the experience's alone (MC-SGD)."""
    batch = tuple(a[:8] for a in (stream.train[1].x, stream.train[1].y, stream.train[1].t))
    for train_replay, size in ((False, 8), (True, 8 + 5)):
        torch.manual_seed(0)
        s = build_strategy({"name": "flow", "buffer_size": 100, "train_replay": train_replay, "mem_batch_size": 5},
                           MLP((1, 8, 8), [32], 10), OptimConfig(), 32, 0)
        run_events(s, stream, steps=5, n=1)
        x, y, t = s.training_batch(batch)
        assert len(x) == len(y) == len(t) == size
        if train_replay:  # the extra rows are memory samples: images of experience 0
            assert all(any(torch.equal(row, m) for m in s.memory.x) for row in x[8:])


@pytest.mark.parametrize("path", ["line", "bezier"])
def test_flow_lowest_point_paths(stream, path):
    torch.manual_seed(0)
    s = build_strategy({"name": "flow", "buffer_size": 100, "path": path, "curve_steps": 20, "grid": 5},
                       MLP((1, 8, 8), [32], 10), OptimConfig(), 32, 0)
    run_events(s, stream, steps=30)
    [move] = s.report().morphs
    assert move["op"] == f"flow_{path}" and move["detail"]["t"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert len(move["detail"]["memory_loss"]) == 5


@pytest.mark.parametrize("cfg, match", [
    ({"name": "flow", "path": "spline"}, "valid paths are: mcsgd, line, bezier, ode"),
    ({"name": "flow", "init_position": 1.5}, "init_position must lie in"),
    ({"name": "flow", "line_samples": 0}, "line_samples must be a positive integer"),
    ({"name": "flow", "train_from": "start"}, "valid choices are: connected, sequential"),
    ({"name": "flow", "train_replay": "maybe"}, "strategy.train_replay must be true or false, got 'maybe'"),
    ({"name": "clewi", "alpha": 2.0}, "alpha must lie in"),
    ({"name": "clewi", "align": "sinkhorn"}, "valid methods are: weights, activations"),
])
def test_bad_flow_configs_are_clear_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        build_strategy(cfg, MLP((1, 8), [8], n_classes=2), OptimConfig(), 16, 0)


def test_flow_run_records_moves_in_results(tmp_path):
    out = tmp_path / "runs"
    code = main(["run", "benchmark=rotated_digits", "benchmark.n_experiences=3", "benchmark.train_per_experience=300",
                 "model.widths=[32]", "strategy=flow", "train.batch_size=32", "logger.mode=disabled",
                 f"output_dir={out}", "train.progress_bar=false", "metrics.lca_beta=0"])
    assert code == 0
    [file] = out.glob("*/results.json")
    r = load_results(file)
    assert [len(e["morphs"]) for e in r["experiences"]] == [0, 1, 1]
    assert r["experiences"][0]["train_samples"] == 300
    assert r["metrics"]["morph_ms"] > 0


def test_train_per_experience_is_a_seeded_subset_and_bad_values_are_refused(capsys, tmp_path):
    a = build_stream("digits", "rotated", 2, 0, rotations=[0.0, 10.0], train_per_experience=50)
    b = build_stream("digits", "rotated", 2, 0, rotations=[0.0, 10.0])
    assert [len(e) for e in a.train] == [50, 50] and len(a.test[0]) == len(b.test[0])
    rows = [(b.train[0].x == x).all(dim=(1, 2, 3)).nonzero() for x in a.train[0].x[:5]]
    assert all(len(r) >= 1 for r in rows)  # every kept sample is one of the experience's own
    code = main(["run", "benchmark=rotated_digits", "benchmark.train_per_experience=100000", "logger.mode=disabled",
                 f"output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "has only 1437 training samples" in err and err.count("\n") == 1
