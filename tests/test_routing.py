"""Class-incremental NeuMeta: the three ways of inferring the task (``hypernet.routing``), the
slimmable task classifier (``hypernet.slimmable``) and a real run with ``routing=router``."""

import json
import math

import numpy as np
import pytest
import torch

from neumeta_cl.errors import ConfigError
from neumeta_cl.hypernet.layout import TargetLayout
from neumeta_cl.hypernet.routing import (fit_calibration, fit_class_offsets, route_by_router,
                                         route_calibrated, task_log_probs)
from neumeta_cl.hypernet.slimmable import STATISTICS, batchnorm_statistics, narrowed, slice_state
from neumeta_cl.nets import build_model


def test_task_log_probs_sum_the_router_softmax_over_each_task():
    router = torch.tensor([[0.0, math.log(3.0), 5.0, 0.0]])  # class 2 is not seen yet: ignored
    logp = task_log_probs(router, [[0, 1], [3]])
    # softmax over seen classes {0, 1, 3}: 1/5, 3/5, 1/5 -> tasks 4/5 and 1/5
    assert logp.exp().tolist()[0] == pytest.approx([0.8, 0.2])


def test_route_by_router_multiplies_the_router_and_the_task_network_and_renormalises():
    torch.manual_seed(0)
    router, a, b = torch.randn(6, 5), torch.randn(6, 2), torch.randn(6, 2)
    scores = route_by_router(router, [a, b], [[0, 3], [1, 4]], n_classes=5)
    assert torch.isinf(scores[:, 2]).all()  # no task has class 2
    assert scores.exp().sum(1).tolist() == pytest.approx([1.0] * 6)
    seen = router[:, [0, 3, 1, 4]].softmax(1)  # p_r over the seen classes, in task order
    product = torch.cat([seen[:, :2] * a.softmax(1), seen[:, 2:] * b.softmax(1)], 1)
    expected = product / product.sum(1, keepdim=True)
    assert scores[:, [0, 3, 1, 4]].exp() == pytest.approx(expected, abs=1e-6)


def test_route_by_router_lets_each_expert_decide_where_the_other_is_unsure():
    classes = [[0, 1], [2, 3]]
    sure, unsure = torch.tensor([[4.0, 0.0]]), torch.zeros(1, 2)
    # The router splits task 0 evenly between its classes; the task network picks class 1.
    router = torch.tensor([[2.0, 2.0, 0.0, 0.0]])
    assert route_by_router(router, [sure.flip(1), unsure], classes, 4).argmax(1).item() == 1
    # A task network at chance (uniform): the router's own class posterior decides within the task.
    router = torch.tensor([[1.0, 3.0, 0.0, 0.0]])
    assert route_by_router(router, [unsure, unsure], classes, 4).argmax(1).item() == 1
    # Summed over a task's classes, the answer keeps the router's task probability when the task
    # networks are at chance: p(task 0) = (e + e^3) / (e + e^3 + 2).
    p0 = route_by_router(router, [unsure, unsure], classes, 4)[0, :2].exp().sum().item()
    assert p0 == pytest.approx(task_log_probs(router, classes)[0, 0].exp().item(), abs=1e-6)


def test_calibration_fixes_an_overconfident_task_network():
    """Two task networks, each right within its task; the second is ten times as confident on
    everything, so a plain joint softmax routes most inputs to it. Fitting a scale and a shift per
    task on labelled samples repairs the routing."""
    g = torch.Generator().manual_seed(0)
    n = 400
    task = torch.randint(0, 2, (n,), generator=g)
    own = torch.randint(0, 2, (n,), generator=g)
    y = torch.where(task == 0, own, own + 2)
    logits = []
    for k in range(2):
        z = torch.randn(n, 2, generator=g) * 0.3
        mine = task == k
        z[mine, own[mine]] += 2.0  # right within its own task
        z[~mine] += torch.randn(int((~mine).sum()), 2, generator=g) * 0.3
        logits.append(z * (10.0 if k == 1 else 1.0) + (3.0 if k == 1 else 0.0))
    classes = [[0, 1], [2, 3]]
    ones, zeros = torch.ones(2), torch.zeros(2)
    before = (route_calibrated(logits, classes, 4, ones, zeros).argmax(1) == y).float().mean()
    scale, shift = fit_calibration(logits, y, classes, 4)
    after = (route_calibrated(logits, classes, 4, scale, shift).argmax(1) == y).float().mean()
    assert before < 0.7 and after > 0.9, (before, after)
    assert scale[1] < scale[0]  # the overconfident network is damped


def test_class_offsets_undo_a_router_biased_against_the_newest_task():
    """A router whose logits for task 1's classes are 3 too low almost never picks task 1. The
    offsets fitted on labelled samples give those classes back about those 3 (centred)."""
    g = torch.Generator().manual_seed(0)
    n, classes = 600, [[0, 1], [2, 3]]
    y = torch.randint(0, 4, (n,), generator=g)
    logits = torch.randn(n, 4, generator=g)
    logits[torch.arange(n), y] += 2.0
    logits[:, 2:] -= 3.0
    task = (y >= 2).long()
    offsets = fit_class_offsets(logits, y, classes)
    before = (task_log_probs(logits, classes).argmax(1) == task).float().mean()
    after = (task_log_probs(logits + offsets, classes).argmax(1) == task).float().mean()
    assert before < 0.6 and after > 0.85, (before, after)
    assert offsets.sum().item() == pytest.approx(0.0, abs=1e-6)
    assert (offsets[2:].mean() - offsets[:2].mean()).item() == pytest.approx(3.0, abs=0.5)


def test_class_offsets_recover_a_shift_within_a_task_and_leave_unseen_classes_alone():
    """One offset per class corrects what one per task cannot: class 1 (task 0) 2 too high against
    class 0. Classes no task has yet (4 and 5 of 6 outputs) keep offset 0."""
    g = torch.Generator().manual_seed(1)
    n, classes = 2000, [[0, 1], [2, 3]]
    y = torch.randint(0, 4, (n,), generator=g)
    logits = torch.randn(n, 6, generator=g)
    logits[torch.arange(n), y] += 2.0
    shift = torch.tensor([0.0, 2.0, -1.0, 0.5])
    logits[:, :4] += shift
    offsets = fit_class_offsets(logits, y, classes)
    assert offsets[4:].tolist() == [0.0, 0.0]
    assert offsets[:4] == pytest.approx((-(shift - shift.mean())).tolist(), abs=0.3)
    before = (logits[:, :4].argmax(1) == y).float().mean()
    after = ((logits + offsets)[:, :4].argmax(1) == y).float().mean()
    assert after > before + 0.05, (before, after)


@pytest.mark.parametrize("model", [{"name": "mlp", "widths": [12, 10]},
                                   {"name": "cnn", "channels": [6, 8], "kernel_size": 3, "batchnorm": True,
                                    "activation": "relu"}])
def test_a_narrowed_network_is_the_slice_of_the_full_one(model):
    torch.manual_seed(0)
    shape = (1, 8, 8) if model["name"] == "cnn" else (20,)
    net = build_model(model, shape, 5, None)
    layout = TargetLayout.from_net(net)
    x = torch.randn(64, *shape)
    net.train()(x)  # some BatchNorm statistics
    net.eval()
    full = narrowed(layout, net, layout.widths, {k: v for k, v in net.state_dict().items() if k.endswith(STATISTICS)})
    assert torch.equal(full(x), net(x))
    small_widths = tuple(max(1, w // 2) for w in layout.widths)
    small = narrowed(layout, net, small_widths)
    state, sliced = small.state_dict(), slice_state(net.state_dict(), small_widths)
    for key, value in sliced.items():
        if not key.endswith(STATISTICS):
            assert torch.equal(state[key], value), key
    first, head = "blocks.0.0.weight", "head.linear.weight"
    assert state[first].shape[:2] == (small_widths[0], net.state_dict()[first].shape[1])  # every input kept
    assert state[head].shape == (5, small_widths[-1])  # every class kept
    if model["name"] == "cnn":  # the statistics of that width: BatchNorm calibration on x
        stats = batchnorm_statistics(layout, net, small_widths, x)
        calibrated = narrowed(layout, net, small_widths, stats)
        h = calibrated.blocks[0][0](x)
        assert torch.allclose(stats["blocks.0.1.running_mean"], h.mean((0, 2, 3)), atol=1e-5)
        assert torch.allclose(stats["blocks.0.1.running_var"], h.var((0, 2, 3)), atol=1e-4)


@pytest.mark.parametrize("pool", [1, 2, 3])
def test_a_narrowed_classifier_with_a_pooled_head_is_the_full_one_with_the_cut_units_silenced(pool):
    """``router_pool``: the head reads a pool x pool grid per channel. The narrow network must be
    the full one with every unit beyond its widths cut off: zero the full network's weights from
    those units and both give the same outputs (a wrong order of the head's columns would not)."""
    from neumeta_cl.hypernet.generator import task_classifier

    torch.manual_seed(0)
    layout = TargetLayout("cnn", (1, 28, 28), (8, 12), kernel_size=3)
    net = task_classifier(layout, 10, pool)
    widths, cells = (3, 5), pool * pool
    assert net.head.linear.in_features == 12 * cells
    with torch.no_grad():
        net.blocks[1][0].weight[:, widths[0]:] = 0
        net.head.linear.weight[:, widths[1] * cells:] = 0
    small = narrowed(layout, net, widths)
    assert small.widths == list(widths) and small.head.linear.in_features == widths[1] * cells
    x = torch.randn(16, 1, 28, 28)
    assert torch.allclose(small(x), net(x), atol=1e-5)
    if pool > 1:  # the INR generates globally pooled targets only
        with pytest.raises(ConfigError, match=f"global average pooling, not a {pool} x {pool} grid"):
            TargetLayout.from_net(net)


def test_stochastic_regulariser_draws_reg_tasks_old_tasks():
    from neumeta_cl.strategies import OptimConfig, build_strategy

    net = build_model({"name": "mlp", "widths": [8]}, (4,), 6, [2, 2, 2])
    cfg = {"name": "neumeta", "hidden": 16, "n_blocks": 1, "n_freqs": 2, "layer_dim": 2, "task_dim": 4,
           "reg_tasks": 2, "eval_fractions": [1.0], "widths_unseen": []}
    s = build_strategy(cfg, net, OptimConfig("adam", 1e-3), 8, 0)
    s.trained = {0: torch.zeros(1), 1: torch.zeros(1), 3: torch.zeros(1)}
    draws = [tuple(s._regularised_tasks()) for _ in range(60)]
    assert all(len(d) == 2 and len(set(d)) == 2 and set(d) <= {0, 1, 3} for d in draws)
    assert len(set(draws)) == 3  # every pair comes up
    s.reg_tasks = 0
    assert s._regularised_tasks() == [0, 1, 3]


def test_neumeta_router_run_on_class_incremental_digits(tmp_path):
    """A real run with the task classifier: its memory is counted in samples, its parameters in the
    stored parameters, and the deployed router at 25% width carries a 25%-wide classifier whose
    accuracy is the one the width sweep recorded."""
    from neumeta_cl.config import load
    from neumeta_cl.hypernet import TaskRouter, load_generator
    from neumeta_cl.nets.evaluation import tensor_accuracy
    from neumeta_cl.run import build_stream_from, run_continual

    cfg = load(["benchmark=split_digits", "benchmark.scenario=class", "model=cnn", "model.channels=[8,16]",
                "strategy=neumeta", "strategy.routing=router", "strategy.buffer_size=100", "strategy.hidden=32",
                "strategy.task_dim=8", "strategy.recon_steps=20", "strategy.teacher_epochs=2",
                "strategy.router_epochs=4", "strategy.eval_fractions=[0.25,1.0]", "strategy.widths_unseen=[]",
                "train.optimizer=adam", "train.lr=0.003", "train.epochs=2", "train.batch_size=32",
                "metrics.lca_beta=0", "metrics.curve_every_n_steps=0", f"output_dir={tmp_path}", "run_name=r",
                "train.progress_bar=false", "logger.mode=disabled", "train.threads=1"])
    data = json.loads(run_continual(cfg).results_path.read_text())
    assert data["status"] == "completed"
    info = data["experiences"][-1]["strategy"]
    assert info["memory_samples"] == 100 and info["router_seconds"] > 0
    g = load_generator(data["experiences"][-1]["generator"])
    classifier = sum(p.numel() for p in g.task_classifier.parameters())
    inr = sum(p.numel() for n, p in g.named_parameters() if not n.startswith("task_classifier"))
    assert info["stored_params"] == classifier + inr
    router = g.router(fraction=0.25)
    assert isinstance(router, TaskRouter) and tuple(router.router.widths) == g.layout.at_fraction(0.25)
    stream = build_stream_from(cfg)
    quarter = {r["fraction"]: r for r in data["experiences"][-1]["widths_eval"]}[0.25]
    assert [tensor_accuracy(router, e.x, e.y) for e in stream.test] == pytest.approx(quarter["accuracy"], abs=1e-9)
    # the same parameters as a budget: trained down to 25% only, the split cannot narrow the task
    # networks, so the 25% budget deploys the 25% networks; the record is what router(budget=) gives
    budgets = {r["fraction"]: r for r in data["experiences"][-1]["budget_eval"]}
    assert budgets[0.25]["budget"] == {"params": quarter["params"]} and budgets[0.25]["params"] <= quarter["params"]
    assert budgets[0.25]["classifier_widths"] == budgets[0.25]["task_widths"] == list(g.layout.at_fraction(0.25))
    split = g.router(budget=budgets[0.25]["budget"])
    assert [tensor_accuracy(split, e.x, e.y) for e in stream.test] == pytest.approx(budgets[0.25]["accuracy"], abs=1e-9)
    # the task classifier learnt something of the stream from its memory of 100 (chance: 0.1)
    classifier_acc = np.mean([tensor_accuracy(g.classifier_at(g.layout.widths), e.x, e.y) for e in stream.test])
    assert classifier_acc > 0.2, classifier_acc  # 0.27 measured: this classifier is still weak (README)


def test_the_task_classifier_trains_apart_from_the_generators_widths(tmp_path):
    """Training the generator down to 12.5% (with the classifier kept at 25% and up) leaves the
    classifier bit for bit as it is beside a generator trained down to 25%: its training reads
    nothing of the INR's, so saved classifiers and generators of the same seed can be recombined.
    The budget split then gives the 25% deployment's parameters to a wider classifier."""
    from neumeta_cl.config import load
    from neumeta_cl.hypernet import load_generator
    from neumeta_cl.run import run_continual

    def run(name, *extra):
        cfg = load(["benchmark=split_digits", "benchmark.scenario=class", "benchmark.n_experiences=2", "model=cnn",
                    "model.channels=[16,32]", "strategy=neumeta", "strategy.routing=router", "strategy.buffer_size=60",
                    "strategy.hidden=16", "strategy.task_dim=4", "strategy.recon_steps=5", "strategy.teacher_epochs=1",
                    "strategy.router_epochs=2", "strategy.eval_fractions=[0.25]", "strategy.widths_unseen=[]",
                    "train.optimizer=adam", "train.lr=0.003", "train.epochs=1", "train.batch_size=64",
                    "metrics.lca_beta=0", "metrics.curve_every_n_steps=0", f"output_dir={tmp_path}", f"run_name={name}",
                    "train.progress_bar=false", "logger.mode=disabled", "train.threads=1", *extra])
        data = json.loads(run_continual(cfg).results_path.read_text())
        return data, load_generator(data["experiences"][-1]["generator"])

    _, quarter = run("quarter")
    data, eighth = run("eighth", "strategy.min_width=0.125", "strategy.router_min_width=0.25",
                       "strategy.eval_fractions=[0.125,0.25]")
    a, b = quarter.task_classifier.state_dict(), eighth.task_classifier.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(quarter.inr.stem.weight, eighth.inr.stem.weight)  # the generators did differ
    # 12.5%'s parameters are too few for the 25% classifier beside any task networks: no budget row
    assert [r["fraction"] for r in data["experiences"][-1]["budget_eval"]] == [0.25]
    row = data["experiences"][-1]["budget_eval"][0]
    assert row["task_widths"] == [2, 4] and row["classifier_widths"][0] > 4 and row["params"] <= row["budget"]["params"]


def test_router_state_round_trip_relinks_the_task_classifier():
    """Resume: the loaded generator brings its own task classifier; the module that trains it must
    train that one (not the object it held before), with the memory and random state restored."""
    from neumeta_cl.config import load, to_dict
    from neumeta_cl.run import build_stream_from
    from neumeta_cl.strategies import OptimConfig, build_strategy
    from tests.conftest import Boundary, end_experience

    cfg = load(["benchmark=split_digits", "benchmark.scenario=class", "model=cnn", "model.channels=[4,8]",
                "strategy=neumeta", "strategy.routing=router", "strategy.buffer_size=50", "strategy.hidden=16",
                "strategy.task_dim=4", "strategy.recon_steps=2", "strategy.teacher_epochs=1",
                "strategy.router_epochs=1"])
    stream = build_stream_from(cfg)

    def fresh():
        net = build_model(to_dict(cfg.model), stream.input_shape, stream.n_classes, stream.heads)
        return build_strategy(to_dict(cfg.strategy), net, OptimConfig("adam", 3e-3), 32, 0)

    s = fresh()
    exp = stream.train[0]
    for part in s.parts:
        part.before_experience(Boundary(s, exp))
    s.before_experience(exp)
    end_experience(s, exp)
    state = s.state_dict()
    t = fresh()
    t.load_state_dict(torch.load(_roundtrip(state), weights_only=True))
    assert t.router.net is t.generator.task_classifier
    for a, b in zip(s.generator.task_classifier.parameters(), t.generator.task_classifier.parameters()):
        assert torch.equal(a, b) and not b.requires_grad
    assert torch.equal(t.memory.x, s.memory.x) and len(t.memory) == 50
    assert t.router.rng.random() == s.router.rng.random()


def _roundtrip(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_class_il_figures_from_results():
    from neumeta_cl.studies.neumeta_class_il import figures, missed_targets

    def run(acc, widths=None, memory=None, budget=None):
        last = {"strategy": {} if memory is None else {"memory_samples": memory}}
        if widths:
            last["widths_eval"] = [{"fraction": f, "acc_seen": a} for f, a in widths.items()]
        if budget:
            last["budget_eval"] = [{"fraction": f, "acc_seen": a, "classifier_widths": [f * 8, f * 16],
                                    "task_widths": [2, 4], "params": int(f * 1000)} for f, a in budget.items()]
        return {"metrics": {"acc": acc}, "experiences": [last]}

    figs = figures({"replay": [run(0.60), run(0.70)],
                    "neumeta_router": [run(0.70, {0.25: 0.66, 0.5: 0.69, 1.0: 0.70}, 500,
                                           {0.25: 0.69, 0.5: 0.70, 1.0: 0.70}),
                                       run(0.66, {0.25: 0.60, 0.5: 0.65, 1.0: 0.66}, 500,
                                           {0.25: 0.64, 0.5: 0.66, 1.0: 0.66})]})
    assert figs["acc_classil"]["replay"] == [0.65, pytest.approx(0.0707, abs=1e-4)]
    assert figs["acc_classil_by_width"]["neumeta_router"]["0.25"][0] == pytest.approx(0.63)
    assert figs["acc_classil_by_budget"]["neumeta_router"]["0.25"][0] == pytest.approx(0.665)
    assert figs["split_by_budget"]["neumeta_router"]["0.5"] == [[4.0, 8.0], [2, 4], 500]
    assert figs["memory_samples"] == {"neumeta_router": 500}
    # full width 0.68 >= replay 0.65; 25% is 5 points below full width, its budget split 1.5
    assert figs["targets"] == {"neumeta_router_at_least_replay": True, "neumeta_router_narrow_within_3pt": False,
                               "neumeta_router_narrow_budget_within_3pt": True}
    assert missed_targets(figs) == ["neumeta_router_narrow_within_3pt"]


@pytest.mark.parametrize("override,message", [
    ("strategy.routing=oracle", "Unknown strategy.routing 'oracle'; valid routings are: router, calibrated, entropy."),
    ("strategy.router_epochs=0", "strategy.router_epochs must be at least 1, got 0."),
    ("strategy.router_distill=-1", "strategy.router_distill must be non-negative, got -1."),
    ("strategy.buffer_size=0", "strategy.buffer_size must be"),
    ("strategy.router_min_width=0", "strategy.router_min_width must be in (0, 1] (or null for min_width), got 0."),
    ("strategy.router_pool=0", "strategy.router_pool must be a positive integer (1: global average pooling), got 0."),
    ("strategy.router_pool=2", "strategy.router_pool=2 pools a CNN's feature map; MLP has none, so leave it at 1 "
                               "or use model=cnn."),
])
@pytest.mark.parametrize("scenario", ["class", "task"])
def test_bad_routing_input_is_one_sentence_and_exit_2(tmp_path, capsys, override, message, scenario):
    from neumeta_cl.cli import main

    code = main(["run", "benchmark=split_digits", f"benchmark.scenario={scenario}", "strategy=neumeta",
                 "strategy.routing=router", override, "logger.mode=disabled", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1 and message in err
    assert not any(tmp_path.rglob("*.pt"))  # refused before anything trained


def test_a_study_prints_its_table_results_targets_and_json_last(capsys):
    from neumeta_cl.studies import print_study

    print_study("the table", {"acc_classil": {"neumeta": [0.7, 0.01]}}, ["acc_classil"], "runs/x")
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "the table" and lines[1] == "results: runs/x" and lines[2] == "targets: not met: acc_classil"
    assert json.loads(lines[-1]) == {"acc_classil": {"neumeta": [0.7, 0.01]}}


def test_router_probe_trains_the_classifier_alone_and_reports_every_width():
    """``scripts/router_probe.py``'s study on two experiences of class-incremental digits: the
    classifier trained as in a routing=router run tells the two tasks apart at full width, well
    above chance."""
    from neumeta_cl.studies.router_probe import FRACTIONS, probe

    out = probe("neumeta_class_il_digits", 0, ["benchmark.n_experiences=2", "strategy.router_epochs=2",
                                                "model.channels=[8,16]"])
    acc = out["task_accuracy"]
    assert list(acc) == [f"{f:g}" for f in FRACTIONS]
    assert all(len(row["per_experience"]) == 2 for row in acc.values())
    assert acc["1"]["with_offsets"] > 0.65, acc  # two tasks: chance is 0.5
    assert all(0.0 <= row["without_offsets"] <= 1.0 for row in acc.values())


def test_router_distillation_is_the_kl_from_the_full_widths_softmax():
    """``router_distill``: the narrower widths' extra term is KL(full || narrow), zero when they
    agree, and its gradient moves the narrow width's logits."""
    import torch

    from neumeta_cl.strategies.task_classifier import distillation

    torch.manual_seed(0)
    full, narrow = torch.randn(6, 10, requires_grad=True), torch.randn(6, 10, requires_grad=True)
    teacher = full.detach().log_softmax(1)
    p, q = teacher.exp(), narrow.log_softmax(1)
    expected = (p * (teacher - q)).sum(1).mean()
    assert float(distillation(narrow, teacher)) == pytest.approx(float(expected), rel=1e-6)
    assert float(distillation(full.detach(), teacher)) == pytest.approx(0.0, abs=1e-6)
    distillation(narrow, teacher).backward()
    assert narrow.grad.abs().sum() > 0
