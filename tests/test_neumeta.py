"""The neumeta strategy end to end on scikit-learn digits: real Avalanche stream, real Trainer runs,
real W&B run files; plus the continual claim that old tasks' generated weights stay put."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from neumeta_cl.config import load, to_dict
from neumeta_cl.hypernet.generator import Request
from neumeta_cl.nets import build_model
from neumeta_cl.run import build_stream_from, run_continual
from neumeta_cl.strategies import OptimConfig, build_strategy
from neumeta_cl.strategies.neumeta import flat
from neumeta_cl.tracking.wandb_file import read_run
from tests.conftest import end_experience


def digits_overrides(tmp_path, *extra):
    return ["benchmark=split_digits", "benchmark.scenario=task", "model=cnn", "model.channels=[8,16]",
            "strategy=neumeta", "strategy.hidden=64", "strategy.task_dim=16", "strategy.reg_weight=10",
            "strategy.teacher_epochs=3", "strategy.recon_steps=200",
            "train.optimizer=adam", "train.lr=0.003", "train.epochs=10", "train.batch_size=32",
            "metrics.lca_beta=0", "metrics.curve_every_n_steps=0", f"output_dir={tmp_path / 'runs'}", "run_name=nm",
            "train.progress_bar=false", *extra]


def test_neumeta_run_records_widths_drift_and_wandb(tmp_path):
    result = run_continual(load(digits_overrides(tmp_path, "logger.mode=offline")))
    data = json.loads(result.results_path.read_text())
    assert data["status"] == "completed"
    R = np.array(data["R"])
    assert np.all(np.diag(R) > 0.85)  # binary digit tasks: every task is learnt at full width
    assert data["metrics"]["acc"] > 0.85 and data["metrics"]["bwt"] > -0.1
    stored = data["experiences"][-1]["strategy"]["stored_params"]
    assert data["model"]["parameters"] == stored  # what the run stores is the INR and embeddings
    for i, e in enumerate(data["experiences"]):
        info = e["strategy"]
        if i == 0:  # the first teacher is trained and smoothed: TSP ordering lowers total variation
            assert info["tv_after"] < info["tv_before"]
        assert set(info["weight_drift"]) == {str(k) for k in range(i + 1)} and info["weight_drift"][str(i)] == 0.0
        rows = {r["fraction"]: r for r in e["widths_eval"]}
        assert sorted(rows) == [0.25, 0.5, 0.625, 0.75, 1.0]
        assert rows[0.625]["unseen"] and not rows[0.5]["unseen"]
        assert rows[0.25]["widths"] == [2, 4] and rows[1.0]["widths"] == [8, 16]
        assert all(len(r["accuracy"]) == i + 1 and r["gen_ms"] > 0 for r in rows.values())
        # The sweep's full-width accuracy is the accuracy matrix's row: the same generated networks.
        assert rows[1.0]["accuracy"] == pytest.approx(list(R[i, : i + 1]), abs=1e-9)
    # The saved generator deploys any task at any width, with no hypernetwork in the module.
    from neumeta_cl.hypernet import load_generator
    from neumeta_cl.nets.evaluation import tensor_accuracy

    g = load_generator(result.results_path.parent / "generator.pt")
    stream = build_stream_from(load(digits_overrides(tmp_path)))
    last_row = {r["fraction"]: r for r in data["experiences"][-1]["widths_eval"]}
    for fraction in (0.5, 1.0):
        net = g.generate(3, fraction=fraction)
        acc = tensor_accuracy(net, stream.test[3].x, stream.test[3].y)
        assert acc == pytest.approx(last_row[fraction]["accuracy"][3], abs=1e-9)
    small = g.generate(1, budget={"params": 300})
    assert sum(p.numel() for p in small.parameters()) <= 300
    run = read_run(result.wandb_dir)
    last = [h for h in run.history if "width/1/acc_seen" in h][-1]
    assert last["width/1/acc_seen"] == pytest.approx(data["experiences"][-1]["widths_eval"][-1]["acc_seen"])
    drift = [h for h in run.history if "strategy/drift/task0" in h][-1]
    assert drift["strategy/drift/task0"] == pytest.approx(data["experiences"][-1]["strategy"]["weight_drift"]["0"])
    table = [h for h in run.history if "accuracy_by_width" in h][-1]
    saved = json.loads((Path(result.wandb_dir) / "files" / table["accuracy_by_width"]["path"]).read_text())
    assert saved["columns"][:6] == ["fraction", "widths", "unseen", "params", "gen_ms", "acc_seen"]
    assert len(saved["data"]) == 5


def test_neumeta_class_incremental_infers_the_task(tmp_path):
    """Class-incremental digits: no task label at test time. Each experience gets its own task
    embedding, and the generated network with the lowest predictive entropy answers (von Oswald et
    al.'s HNET+ENT). Naive fine-tuning on the same stream keeps little beyond the last experience."""
    from neumeta_cl.hypernet import load_generator
    from neumeta_cl.nets.evaluation import tensor_accuracy

    cfg = load(digits_overrides(tmp_path, "benchmark.scenario=class", "logger.mode=disabled"))
    data = json.loads(run_continual(cfg).results_path.read_text())
    naive = ["benchmark=split_digits", "benchmark.scenario=class", "model=cnn", "model.channels=[8,16]",
             "strategy=naive", "train.optimizer=adam", "train.lr=0.003", "train.epochs=10", "train.batch_size=32",
             "metrics.lca_beta=0", "metrics.curve_every_n_steps=0", f"output_dir={tmp_path / 'runs'}",
             "run_name=naive", "train.progress_bar=false", "logger.mode=disabled"]
    baseline = json.loads(run_continual(load(naive)).results_path.read_text())
    R = np.array(data["R"])
    assert data["status"] == "completed" and data["experiences"][-1]["strategy"]["weight_drift"].keys() == {
        "0", "1", "2", "3", "4"}
    # Seeds 0/1/2 gave 0.65/0.57/0.36 (naive 0.21/0.10/0.30); the margins below leave room for
    # another CPU's floating point. Old tasks are where task inference shows: naive kept 0.13-0.17.
    assert data["metrics"]["acc"] > 0.4 and data["metrics"]["acc"] > baseline["metrics"]["acc"] + 0.15
    old, naive_old = R[-1, :-1].mean(), np.array(baseline["R"])[-1, :-1].mean()
    assert old > 0.3 and old > naive_old + 0.2, (old, naive_old)
    assert R[0, 0] > 0.95  # one task seen: nothing to confuse it with
    for i, e in enumerate(data["experiences"]):
        rows = {r["fraction"]: r for r in e["widths_eval"]}
        # the sweep's router at full width is the network the runner evaluated
        assert rows[1.0]["accuracy"] == pytest.approx(list(R[i, : i + 1]), abs=1e-9)
    stream = build_stream_from(cfg)
    router = load_generator(Path(data["experiences"][-1]["generator"])).router(fraction=0.5)
    half = {r["fraction"]: r for r in data["experiences"][-1]["widths_eval"]}[0.5]
    assert [tensor_accuracy(router, e.x, e.y) for e in stream.test] == pytest.approx(half["accuracy"], abs=1e-9)


def _train(strategy, exp, epochs=3, lr=3e-3):
    """A plain loop over the strategy's own loss (the Trainer path is covered above)."""
    from neumeta_cl.data import make_loader

    strategy.before_experience(exp)
    opt = torch.optim.Adam([p for p in strategy.net.parameters() if p.requires_grad], lr=lr)
    for epoch in range(epochs * 3):
        for batch in make_loader(exp, 32, seed=epoch):
            loss = strategy.compute_loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    end_experience(strategy, exp)


def _task0_change(tmp_path, reg_weight: float, precision: str = "float32") -> tuple[float, float, float]:
    """Mean squared change of task 0's unit-scale generated weights, over every training width,
    while task 1 trains; and task 0's accuracy before and after."""
    from neumeta_cl.nets.evaluation import tensor_accuracy

    cfg = load(digits_overrides(tmp_path, "logger.mode=disabled", "strategy.teacher_epochs=0"))
    stream = build_stream_from(cfg)
    torch.manual_seed(0)
    net = build_model(to_dict(cfg.model), stream.input_shape, stream.n_classes, stream.heads)
    s = build_strategy({**to_dict(cfg.strategy), "reg_weight": reg_weight, "inr_precision": precision}, net,
                       OptimConfig("adam", 3e-3), 32, 0)
    g, test0 = s.generator, stream.test[0]
    _train(s, stream.train[0])
    with torch.no_grad():
        before = [flat(g.raw_many([Request(0, w)])[0]) for w in s.train_widths]
    acc_before = tensor_accuracy(s.generate(0), test0.x, test0.y)
    _train(s, stream.train[1])
    with torch.no_grad():
        after = [flat(g.raw_many([Request(0, w)])[0]) for w in s.train_widths]
    acc_after = tensor_accuracy(s.generate(0), test0.x, test0.y)
    return float(np.mean([(a - b).pow(2).mean().item() for a, b in zip(after, before)])), acc_before, acc_after


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_old_task_weights_stay_put_under_the_regulariser(tmp_path, precision):
    free, _, _ = _task0_change(tmp_path, 0.0, precision)
    held, acc_before, acc_after = _task0_change(tmp_path, 100.0, precision)
    assert held < 0.05 * free, (held, free)  # the regulariser, not chance, keeps task 0 in place
    assert held ** 0.5 < 0.1  # RMS change under 10% of the unit output scale, at every training width
    assert acc_after >= acc_before - 0.02


def test_raw_rows_are_the_flat_outputs_query_by_query(tmp_path):
    """raw_rows of every query, masked, is flat(raw_many(...)); of some queries, those queries' rows."""
    cfg = load(digits_overrides(tmp_path, "logger.mode=disabled"))
    stream = build_stream_from(cfg)
    net = build_model(to_dict(cfg.model), stream.input_shape, stream.n_classes, stream.heads)
    g = build_strategy(to_dict(cfg.strategy), net, OptimConfig("adam", 3e-3), 32, 0).generator
    for r in (Request(1, g.layout.widths), Request(3, g.layout.at_fraction(0.5))):
        n = len(g.queries(r.task, r.widths))
        mask = g.row_mask(r)
        every = g.raw_rows([r], [torch.arange(n)])[0]
        assert torch.equal(every[mask], flat(g.raw_many([r])[0]))
        some = torch.tensor([n - 1, 0, 5])
        assert torch.allclose(g.raw_rows([r], [some])[0], every[some], atol=1e-6)


def test_sampled_regulariser_estimates_the_full_one(tmp_path):
    """reg_fraction: on every query the sampled penalty is the full one; on a fraction, its mean
    over draws is the full one (an unbiased estimate, at that fraction of the INR's queries)."""
    cfg = load(digits_overrides(tmp_path, "logger.mode=disabled", "strategy.teacher_epochs=0"))
    stream = build_stream_from(cfg)
    torch.manual_seed(0)
    net = build_model(to_dict(cfg.model), stream.input_shape, stream.n_classes, stream.heads)
    s = build_strategy(to_dict(cfg.strategy), net, OptimConfig("adam", 3e-3), 32, 0)
    _train(s, stream.train[0], epochs=1)
    s.before_experience(stream.train[1])
    with torch.no_grad():  # move the INR so that the penalty is not zero
        for p in s.generator.inr.blocks.parameters():
            p.add_(0.05 * torch.randn_like(p))
        requests = [Request(0, w) for w in (s.layout.widths, s.train_widths[3])]
        full = float(s._old_task_penalty(s.generator.raw_many(requests), requests))
        assert float(s._sampled_penalty(requests, 1.0)) == pytest.approx(full, rel=1e-5)
        draws = [float(s._sampled_penalty(requests, 0.25)) for _ in range(200)]
    assert full > 0 and np.std(draws) > 0
    assert np.mean(draws) == pytest.approx(full, rel=0.05)


def test_shared_regulariser_budget_splits_one_networks_queries_over_the_old_tasks(tmp_path, monkeypatch):
    """reg_budget=shared: with k old tasks each gets reg_fraction / k of its queries, so the
    regulariser's rows per step stay those of one old network; per_task gives each reg_fraction."""
    cfg = load(digits_overrides(tmp_path, "logger.mode=disabled", "strategy.teacher_epochs=0",
                                "strategy.reg_fraction=0.5", "strategy.reg_budget=shared"))
    stream = build_stream_from(cfg)
    net = build_model(to_dict(cfg.model), stream.input_shape, stream.n_classes, stream.heads)
    s = build_strategy(to_dict(cfg.strategy), net, OptimConfig("adam", 3e-3), 32, 0)
    assert [s._reg_fraction_each(k) for k in (1, 2, 4)] == [0.5, 0.25, 0.125]
    for budget, each in (("shared", 0.125), ("per_task", 0.5)):
        s.reg_budget = budget
        s.stage(4)
        asked, raw_rows = [], type(s.generator).raw_rows
        monkeypatch.setattr(s.generator, "raw_rows",
                            lambda requests, rows: asked.append((requests, rows)) or raw_rows(s.generator, requests, rows))
        with torch.no_grad():
            s.step_weights(s.coord_noise)
        (requests, rows), = asked
        assert sorted({r.task for r in requests}) == [0, 1, 2, 3] and len(requests) == 8
        assert [len(i) for i in rows] == [math.ceil(each * len(s.generator.queries(r.task, r.widths))) for r in requests]


def _first_task_with_a_spy(tmp_path, *extra):
    """A NeuMeta module on the digits' first experience (no teacher), whose generated networks record
    (widths, samples) in ``seen`` each time they run; returns it, ``seen`` and a batch of 30."""
    cfg = load(digits_overrides(tmp_path, "logger.mode=disabled", "strategy.teacher_epochs=0", *extra))
    stream = build_stream_from(cfg)
    net = build_model(to_dict(cfg.model), stream.input_shape, stream.n_classes, stream.heads)
    s = build_strategy(to_dict(cfg.strategy), net, OptimConfig("adam", 3e-3), 32, 0)
    exp = stream.train[0]
    s.before_experience(exp)
    seen = []
    run = s.generator.run
    s.generator.run = lambda weights, task, widths, x: seen.append((tuple(widths), len(x))) or run(weights, task, widths, x)
    return s, seen, (exp.x[:30], exp.y[:30], exp.t[:30])


def test_sandwich_batch_gives_the_narrower_networks_part_of_the_batch(tmp_path):
    """strategy.sandwich_batch: the full-width network sees the whole batch, the narrowest and the
    random-width ones its first ceil(fraction * batch) samples; the loss stays finite and trains."""
    s, seen, batch = _first_task_with_a_spy(tmp_path, "strategy.sandwich_batch=0.25")
    loss = s.compute_loss(batch)
    assert torch.isfinite(loss)
    assert seen[0] == (tuple(s.layout.widths), 30)
    assert [n for _, n in seen[1:]] == [8, 8] and seen[1][0] == tuple(s.train_widths[0])


def test_one_narrower_network_per_step_draws_the_narrowest_or_a_random_width(tmp_path):
    """strategy.narrower_per_step=1: each step runs the full width and one narrower network, the
    narrowest on some steps and a random training width on others; 2 (the sandwich rule) runs both."""
    s, seen, batch = _first_task_with_a_spy(tmp_path, "strategy.narrower_per_step=1")
    narrowest = tuple(s.train_widths[0])
    drawn = []
    for _ in range(40):
        seen.clear()
        loss = s.compute_loss(batch)
        assert torch.isfinite(loss) and len(seen) == 2 and seen[0] == (tuple(s.layout.widths), 30)
        drawn.append(seen[1][0])
    assert 5 < drawn.count(narrowest) < 35 and len(set(drawn)) > 2
    s.narrower_per_step = 2
    seen.clear()
    s.compute_loss(batch)
    assert len(seen) == 3 and seen[1][0] == narrowest


def test_full_batch_zero_leaves_the_full_width_to_its_teacher(tmp_path):
    """strategy.full_batch=0: with a teacher, the full-width network is not run on the batch (its
    reconstruction of the teacher trains it); the narrowest and the random width still are. With no
    teacher the full width keeps the whole batch, or nothing would teach it."""
    s, seen, batch = _first_task_with_a_spy(tmp_path, "strategy.full_batch=0")
    s.compute_loss(batch)  # no teacher
    assert seen[0] == (tuple(s.layout.widths), 30) and len(seen) == 3
    seen.clear()
    s.stage(0)  # the teacher is what the generator outputs now
    s.teacher = [(w + 0.1, b) for w, b in s.teacher]
    loss = s.compute_loss(batch)
    assert len(seen) == 2 and seen[0] == (tuple(s.train_widths[0]), 30)
    assert torch.isfinite(loss)
    loss.backward()
    assert s.generator.inr.task_emb[0].grad.abs().sum() > 0


def test_a_narrow_teacher_gives_full_width_targets_with_its_function(tmp_path, monkeypatch):
    """strategy.teacher_width=0.5: the teacher trains at half width and Net2Wider copies its units up
    to full width, each unit twice. The raw targets it leaves are full-width, the network they make
    computes the trained half-width network's function (to 1e-5, BatchNorm folded), and after
    smoothing every unit's two copies sit side by side, so the teacher's width samples the teacher."""
    from neumeta_cl.hypernet.smoothing import layer_weights, load_weights
    from neumeta_cl.strategies import neumeta as nm

    cfg = load(digits_overrides(tmp_path, "logger.mode=disabled", "strategy.teacher_width=0.5",
                                "strategy.teacher_epochs=2", "strategy.recon_steps=0"))
    stream = build_stream_from(cfg)
    net = build_model(to_dict(cfg.model), stream.input_shape, stream.n_classes, stream.heads)
    s = build_strategy(to_dict(cfg.strategy), net, OptimConfig("adam", 3e-3), 32, 0)
    trained, fit = [], nm.fit_experience  # the teacher, as it was trained
    monkeypatch.setattr(nm, "fit_experience", lambda net, *a, **k: trained.append(net) or fit(net, *a, **k))
    s.before_experience(stream.train[0])
    teacher = trained[0].eval()
    assert teacher.widths == [4, 8] and s.layout.widths == (8, 16)
    targets = s.generator.scale(s.teacher, Request(0, s.layout.widths))
    assert [tuple(w.shape) for w, _ in targets] == [tuple(w.shape) for w, _ in layer_weights(s.layout.build((8, 16), 2))]
    x = stream.test[0].x[:64]
    grown = load_weights(s.layout, [(w.detach(), b.detach()) for w, b in targets], 2)
    with torch.no_grad():
        assert (grown(x) - teacher(x)).abs().max() < 1e-5
    for w, b in targets[:2]:  # both hidden layers: units 2j and 2j+1 are copies of one teacher unit
        assert torch.equal(w[0::2], w[1::2]) and torch.equal(b[0::2], b[1::2]) and not torch.equal(w[0], w[2])
    assert s.info["teacher_fit_seconds"] > 0


def test_inr_batch_size_sets_the_steps_of_an_experience(tmp_path):
    """strategy.inr_batch_size: the runner batches NeuMeta's experience at that size (steps per
    epoch = ceil(samples / batch)); the teacher keeps train.batch_size."""
    extra = ["logger.mode=disabled", "train.epochs=1", "strategy.teacher_epochs=1", "strategy.recon_steps=5",
             "benchmark.n_experiences=2"]
    steps = {}
    for batch in (None, 100):
        overrides = [*extra, f"run_name=b{batch}"] + ([f"strategy.inr_batch_size={batch}"] if batch else [])
        data = json.loads(run_continual(load(digits_overrides(tmp_path, *overrides))).results_path.read_text())
        steps[batch] = [e["steps"] for e in data["experiences"]]
        sizes = data["stream"]["train_sizes"]
    assert steps[None] == [-(-n // 32) for n in sizes]
    assert steps[100] == [-(-n // 100) for n in sizes]


def test_neumeta_widths_script_quick(tmp_path):
    """neumeta_widths --quick: NeuMeta and every individually trained baseline on digits."""
    from neumeta_cl.studies import neumeta_widths

    saved, out_dir = neumeta_widths.run_seeds(out_root=tmp_path, quick=True)
    figs = neumeta_widths.summarise(saved)
    last = json.loads(json.dumps(figs))  # the script's last line
    assert last == figs
    for key in ("acc_full", "acc_full_upper", "bwt", "acc_by_width", "bwt_by_width", "unseen_width", "stored_params",
                "individual_params_total", "gen_ms_full", "minutes_per_seed", "targets"):
        assert key in last, key
    assert set(last["acc_by_width"]) == set(last["bwt_by_width"]) == {"0.25", "0.5", "0.625", "0.75", "1"}
    assert last["bwt_by_width"]["1"] == pytest.approx(last["bwt"], abs=1e-4)  # the sweep's R is the run's R
    assert last["unseen_width"][0]["widths"] == [5, 10]
    # CNN [w, 2w] on 8x8 digits, 2 classes, BatchNorm folded: 10w + (18w^2 + 2w) + (4w + 2), 5 tasks.
    expected = 5 * sum(10 * w + 18 * w * w + 2 * w + 4 * w + 2 for w in (2, 4, 5, 6, 8))
    assert last["individual_params_total"] == expected
    assert last["acc_full_upper"] > 0.85 and last["acc_full"] > 0.6  # a smoke run: learnt, above chance
    assert 0 < last["gen_ms_full"] < 1000
    assert neumeta_widths.render(figs).row_count == len(last["acc_by_width"])
    # the paced ratio, each side over its full-width training: recorded, positive, of the plain one's order
    ind = saved["individuals"][0]
    assert len(ind["seconds_by_width"]) == 5 and sum(ind["seconds_by_width"]) <= ind["seconds"]
    assert 0 < last["train_time_ratio_paced"] < 5 * last["train_time_ratio"]
    # the individual networks trained with the threads the launcher gave the NeuMeta run
    run_threads = json.loads(Path(saved["runs"][0]).read_text())["config"]["train"]["threads"]
    assert saved["individuals"][0]["threads"] == run_threads >= 1
    # --from re-reads the saved run and gives the same figures
    again = neumeta_widths.summarise(neumeta_widths.read_saved([out_dir]))
    assert again["acc_by_width"] == last["acc_by_width"] and again["stored_params"] == last["stored_params"]
    # a rerun skips the finished run and keeps the networks and seconds it saved, untouched
    before = (out_dir / "individual.json").read_text()
    rerun, _ = neumeta_widths.run_seeds(out_root=tmp_path, quick=True)
    assert rerun == saved and (out_dir / "individual.json").read_text() == before
    # --baselines: a NeuMeta variant against the very same individually trained networks
    variant, _ = neumeta_widths.run_seeds(["strategy.reg_weight=0"], tmp_path / "variant", baselines=[out_dir],
                                          quick=True)
    variant = neumeta_widths.summarise(variant)
    assert {f: v[1] for f, v in variant["acc_by_width"].items()} == {f: v[1] for f, v in last["acc_by_width"].items()}


def test_paced_ratio_cancels_a_machine_that_slows_down_in_one_phase():
    """The same training measured while the machine ran 1.3 times slower in NeuMeta's phase (or 0.9 times
    as fast in the individual networks'): the paced ratio, each side over its own full-width networks,
    stays the same."""
    from neumeta_cl.studies.neumeta_widths import paced_ratio

    neumeta, teachers, individuals, full = 320.0, 80.0, 265.0, 80.0
    calm = paced_ratio(neumeta, teachers, individuals, full)
    assert calm == pytest.approx((320 / 80) / (265 / 80))
    assert paced_ratio(1.3 * neumeta, 1.3 * teachers, individuals, full) == pytest.approx(calm)
    assert paced_ratio(neumeta, teachers, 0.9 * individuals, 0.9 * full) == pytest.approx(calm)


@pytest.mark.parametrize("overrides, message", [
    (["strategy.min_width=0"], "strategy.min_width must be in (0, 1], got 0"),
    (["strategy.widths_unseen=[1.0]"], "strategy.widths_unseen must lie in (0, 1), got 1.0"),
    (["strategy.reg_weight=-1"], "strategy.reg_weight must be non-negative"),
    (["strategy.eval_samples=0"], "strategy.eval_samples must be at least 1"),
    (["strategy.teachers=all"], "strategy.teachers must be 'every' or 'first'"),
    (["strategy.task_init=zeros"], "strategy.task_init must be 'random' or 'previous'"),
    (["strategy.eval_fractions=[0.5,2]"], "strategy.eval_fractions must lie in (0, 1], got 2"),
    (["strategy.inr_batch_size=0"], "strategy.inr_batch_size must be at least 1"),
    (["strategy.inr_lr=0"], "strategy.inr_lr must be positive"),
    (["strategy.reg_fraction=0"], "strategy.reg_fraction must be in (0, 1], got 0"),
    (["strategy.reg_budget=all"], "Unknown strategy.reg_budget 'all'; valid budgets are: per_task, shared."),
    (["strategy.sandwich_batch=1.5"], "strategy.sandwich_batch must be in (0, 1], got 1.5"),
    (["strategy.narrower_per_step=3"], "strategy.narrower_per_step must be 1 or 2, got 3"),
    (["strategy.full_batch=-0.5"], "strategy.full_batch must be in [0, 1], got -0.5"),
    (["strategy.teacher_width=0"], "strategy.teacher_width must be in (0, 1] (a fraction of the full width), got 0"),
    (["strategy.inr_precision=half"], "Unknown strategy.inr_precision 'half'; valid precisions are: float32, bfloat16."),
    (["strategy.hiden=64"], "Unknown config key 'strategy.hiden'"),
])
def test_neumeta_bad_input_is_one_sentence_and_exit_2(overrides, message, capsys, tmp_path):
    from neumeta_cl.cli import main

    base = ["benchmark=split_digits", "benchmark.scenario=task", "model=cnn", "strategy=neumeta"]
    code = main(["run", *base, *overrides, "logger.mode=disabled", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not any(tmp_path.rglob("results.json"))  # refused before anything ran


def test_individual_networks_give_back_the_callers_threads_even_when_they_fail():
    """``train_individuals`` trains with the run's ``train.threads`` and restores the caller's count
    afterwards, also when training fails (here: an optimizer that does not exist)."""
    import torch

    from neumeta_cl.config import compose
    from neumeta_cl.errors import ConfigError
    from neumeta_cl.studies.neumeta_widths import train_individuals

    before = torch.get_num_threads()
    cfg = compose(["benchmark=split_digits", "benchmark.scenario=task", "model=mlp", "train.optimizer=bogus",
                   f"train.threads={before + 1}"])
    with pytest.raises(ConfigError, match="Unknown optimizer 'bogus'"):
        train_individuals(cfg, [1.0])
    assert torch.get_num_threads() == before
