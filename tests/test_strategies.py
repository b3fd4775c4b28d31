"""Strategy pieces checked against hand computations and Avalanche's own implementations."""

import copy

import pytest
import torch
import torch.nn.functional as F

from neumeta_cl.data import TensorExperience
from neumeta_cl.errors import ConfigError
from neumeta_cl.nets import MLP
from neumeta_cl.strategies import EWCPenalty, OptimConfig, ReplayBuffer, build_strategy
from neumeta_cl.strategies.ewc import diagonal_fisher, ewc_penalty
from tests.conftest import Boundary, end_experience
from neumeta_cl.strategies.lwf import Distillation, distillation_loss
from neumeta_cl.strategies.replay import balanced_quota


def _exp(index, n=60, classes=(0, 1), task=0, seed=0, dim=8):
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(classes).repeat(n // len(classes))
    return TensorExperience(index=index, x=torch.randn(len(y), 1, dim, generator=g), y=y,
                            t=torch.full_like(y, task), task_label=task, classes=list(classes))


def test_diagonal_fisher_matches_avalanche_ewc_importances():
    from avalanche.training.plugins.ewc import EWCPlugin

    torch.manual_seed(0)
    net = MLP((1, 8), [16], n_classes=4)
    exp = _exp(0, n=100, classes=(0, 1, 2, 3))
    ours = diagonal_fisher(net, exp.x, exp.y, exp.t, batch_size=32)

    dataset = torch.utils.data.TensorDataset(exp.x, exp.y, exp.t)
    plugin = EWCPlugin(ewc_lambda=1.0)
    theirs = plugin.compute_importances(net, torch.nn.CrossEntropyLoss(), torch.optim.SGD(net.parameters(), lr=0.1),
                                        dataset, "cpu", batch_size=32)
    for name, imp in theirs.items():
        torch.testing.assert_close(ours[name], imp.data, rtol=1e-5, atol=1e-8)
    assert sum(f.sum() for f in ours.values()) > 0


def test_ewc_penalty_is_the_weighted_squared_distance():
    net = MLP((1, 4), [3], n_classes=2)
    star = {k: p.detach().clone() for k, p in net.named_parameters()}
    fisher = {k: torch.rand_like(p) for k, p in net.named_parameters()}
    assert ewc_penalty(net, [(fisher, star)]).item() == 0.0
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5)
    expected = sum((fisher[k] * 0.25).sum() for k in fisher)
    torch.testing.assert_close(ewc_penalty(net, [(fisher, star)]), expected)


def test_online_ewc_decays_old_importance_and_keeps_one_anchor():
    class M:
        device = torch.device("cpu")

    m = M()
    m.net = MLP((1, 8), [8], n_classes=2)
    piece = EWCPenalty(ewc_lambda=1.0, mode="online", decay=0.5, fisher_batch_size=16)
    e0, e1 = _exp(0, seed=0), _exp(1, seed=1)
    piece.after_training(Boundary(m, e0))
    f0 = {k: v.clone() for k, v in piece.anchors[0][0].items()}
    piece.after_training(Boundary(m, e1))
    f1 = diagonal_fisher(m.net, e1.x, e1.y, e1.t, 16)
    assert len(piece.anchors) == 1
    for k in f0:
        torch.testing.assert_close(piece.anchors[0][0][k], 0.5 * f0[k] + f1[k])

    separate = EWCPenalty(ewc_lambda=1.0, mode="separate")
    separate.after_training(Boundary(m, e0))
    separate.after_training(Boundary(m, e1))
    assert len(separate.anchors) == 2


def test_balanced_quota_splits_slots_evenly():
    assert balanced_quota(10, [3, 1, 2]) == {1: 4, 2: 3, 3: 3}
    assert sum(balanced_quota(500, list(range(7))).values()) == 500


def test_class_balanced_buffer_shrinks_old_classes_as_new_ones_arrive():
    buf = ReplayBuffer(20, "class_balanced", seed=0)
    buf.update(_exp(0, n=100, classes=(0, 1)))
    assert len(buf) == 20 and torch.bincount(buf.y).tolist() == [10, 10]
    buf.update(_exp(1, n=100, classes=(2, 3)))
    assert len(buf) == 20 and torch.bincount(buf.y).tolist() == [5, 5, 5, 5]


def test_class_balanced_buffer_samples_a_returning_class_across_experiences():
    # Domain-incremental: class 0 appears in every experience; the buffer must not keep only the last.
    counts = torch.zeros(3)
    for seed in range(20):
        buf = ReplayBuffer(30, "class_balanced", seed=seed)
        for i in range(3):
            e = _exp(i, n=100, classes=(0,), seed=i)
            e.x = torch.full_like(e.x, float(i))  # mark each experience's samples
            buf.update(e)
        assert len(buf) == 30
        counts += torch.bincount(buf.x[:, 0, 0].long(), minlength=3)
    shares = counts / counts.sum()
    assert torch.all((shares - 1 / 3).abs() < 0.05), shares


def test_reservoir_buffer_is_a_uniform_sample_of_the_stream():
    counts = torch.zeros(2)
    for seed in range(40):
        buf = ReplayBuffer(50, "reservoir", seed=seed)
        buf.update(_exp(0, n=300, classes=(0,)))  # 300 samples of class 0
        buf.update(_exp(1, n=100, classes=(1,)))  # then 100 of class 1
        assert len(buf) == 50
        counts += torch.bincount(buf.y, minlength=2)
    frac_new = (counts[1] / counts.sum()).item()
    assert abs(frac_new - 0.25) < 0.05  # 100 of 400 samples seen belong to class 1


def test_replay_batches_append_buffered_samples():
    net = MLP((1, 8), [8], n_classes=4)
    module = build_strategy({"name": "replay", "buffer_size": 30, "mem_batch_size": 7}, net, OptimConfig(), 16, 0)
    batch = (torch.randn(16, 1, 8), torch.zeros(16, dtype=torch.long), torch.zeros(16, dtype=torch.long))
    assert module.training_batch(batch)[0].shape[0] == 16  # empty buffer: batch unchanged
    end_experience(module, _exp(0, classes=(0, 1)))
    x, y, t = module.training_batch(batch)
    assert x.shape[0] == 23 and set(y[16:].tolist()) <= {0, 1}


def test_distillation_is_zero_for_the_teacher_itself_and_positive_after_drift():
    torch.manual_seed(0)

    class M:
        device = torch.device("cpu")

    m = M()
    m.net = MLP((1, 8), [16], n_classes=4)
    piece = Distillation(alpha=1.0, temperature=2.0)
    exp = _exp(0, classes=(0, 1))
    piece.after_training(Boundary(m, exp))
    x = torch.randn(10, 1, 8)
    t = torch.zeros(10, dtype=torch.long)
    assert abs(float(piece.loss(m, x, t, m.net(x, t)))) < 1e-7
    with torch.no_grad():
        m.net.head.linear.weight.add_(torch.randn_like(m.net.head.linear.weight))
    assert float(piece.loss(m, x, t, m.net(x, t))) > 1e-3


def test_distillation_loss_equals_avalanche_lwf():
    from avalanche.training.regularization import LearningWithoutForgetting

    torch.manual_seed(0)
    z, z_old = torch.randn(8, 5), torch.randn(8, 5)
    theirs = LearningWithoutForgetting(alpha=1.0, temperature=2.0)._distillation_loss(z, z_old, [0, 1, 2, 3, 4])
    torch.testing.assert_close(distillation_loss(z, z_old, 2.0), theirs)


@pytest.mark.parametrize("cfg, match", [
    ({"name": "ewc", "ewc_lambda": -1.0}, "ewc_lambda must be >= 0"),
    ({"name": "ewc", "mode": "offline"}, "valid modes are: online, separate"),
    ({"name": "replay", "buffer_size": 0}, "buffer_size must be positive"),
    ({"name": "replay", "policy": "fifo"}, "valid policies are"),
    ({"name": "lwf", "beta": 1.0}, "valid keys are: alpha, temperature"),
    ({"name": "gem"}, "valid strategies are: agem, clewi, der, er_ace, ewc, flow, gdumb, grow_ewc, joint, lwf, mas, naive, neumeta, prune_grow, replay, si"),
])
def test_bad_strategy_configs_are_clear_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        build_strategy(cfg, MLP((1, 8), [8], n_classes=2), OptimConfig(), 16, 0)
