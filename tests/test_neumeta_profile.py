"""The profile of NeuMeta's training cost (``scripts/profile_neumeta.py``): its estimate and the
state it times steps from."""

from __future__ import annotations

import pytest

from neumeta_cl.studies.neumeta_profile import estimate, measure


def test_estimate_counts_teachers_warm_ups_and_inr_epochs_against_the_individuals():
    rows = [{"step": 2.0, "warmup_step": 1.0}, {"step": 3.0, "warmup_step": 1.5}, {"step": 4.0, "warmup_step": 2.0}]
    individual = {0.5: 0.5, 1.0: 1.0}
    out = estimate(rows, individual, taught=[0, 1, 2], epochs=3, inr_epochs=2, steps_per_epoch=10,
                   inr_steps_per_epoch=5, teacher_epochs=1, recon_steps=100)
    assert out["teachers"] == 3 * 1 * 10
    assert out["warmup"] == pytest.approx((1.0 + 1.5 + 2.0) * 100)
    assert out["inr_training"] == pytest.approx((2 + 3 + 4) * 2 * 5)
    assert out["individuals"] == pytest.approx(1.5 * 3 * 3 * 10)
    assert out["estimated_ratio"] == pytest.approx((30 + 450 + 90) / 135)
    first = estimate(rows, individual, taught=[0], epochs=3, inr_epochs=2, steps_per_epoch=10,
                     inr_steps_per_epoch=5, teacher_epochs=1, recon_steps=100)  # strategy.teachers=first
    assert (first["teachers"], first["warmup"]) == (10, 100.0)
    narrow = estimate(rows, individual, taught=[0, 1, 2], epochs=3, inr_epochs=2, steps_per_epoch=10,
                      inr_steps_per_epoch=5, teacher_epochs=1, recon_steps=100, teacher_step=0.25)  # teacher_width
    assert narrow["teachers"] == pytest.approx(3 * 10 * 0.25) and narrow["warmup"] == out["warmup"]


def test_stage_sets_the_old_targets_and_teacher_a_step_on_that_task_sees():
    import torch

    from neumeta_cl.config import load, to_dict
    from neumeta_cl.hypernet.generator import Request
    from neumeta_cl.nets import build_model
    from neumeta_cl.run import build_stream_from
    from neumeta_cl.strategies import OptimConfig, build_strategy
    from neumeta_cl.strategies.neumeta import flat
    from neumeta_cl.studies.neumeta_widths import QUICK

    cfg = load(["model=cnn", "benchmark.scenario=task", "strategy=neumeta", *QUICK])
    stream = build_stream_from(cfg)
    net = build_model(to_dict(cfg.model), stream.input_shape, stream.n_classes, stream.heads)
    module = build_strategy(to_dict(cfg.strategy), net, OptimConfig("adam", 1e-3), 32, 0)
    module.stage(2)
    assert module.task == 2 and sorted(module.trained) == [0, 1]
    assert len(module.old_targets) == 2 * len(module.train_widths)
    assert [e.requires_grad for e in module.generator.inr.task_emb] == [k == 2 for k in range(5)]
    with torch.no_grad():
        now = module.generator.raw_many([Request(2, tuple(module.layout.widths))])[0]
    assert torch.equal(flat(now), flat(module.teacher))
    exp = stream.train[2]
    loss = module.compute_loss((exp.x[:32], exp.y[:32], exp.t[:32]))
    assert torch.isfinite(loss) and loss.requires_grad


def test_measure_profiles_every_position_on_digits():
    out = measure(threads=1, repeat=1, quick=True)
    assert [r["old_tasks"] for r in out["steps"]] == [0, 1, 2, 3, 4]
    assert out["individual_steps"]["1.0"] == 1.0 and set(out["individual_steps"]) == {"0.25", "0.5", "0.625", "0.75", "1.0"}
    assert all(r["step"] > 0 and r["inr"] > 0 and r["warmup_step"] > 0 for r in out["steps"])
    # QUICK: strategy.teacher_epochs=2, batch 32; the experiment's teachers train at a quarter width
    assert out["teachers"] == pytest.approx(5 * 2 * -(-len_task_0() // 32) * out["individual_steps"]["0.25"])
    total = out["teachers"] + out["warmup"] + out["inr_training"]
    assert out["estimated_ratio"] == pytest.approx(total / out["individuals"])


def len_task_0() -> int:
    from neumeta_cl.config import load
    from neumeta_cl.experiment import load_experiment
    from neumeta_cl.run import build_stream_from
    from neumeta_cl.studies.neumeta_widths import QUICK

    cfg = load([*load_experiment("neumeta_widths").overrides, "strategy=neumeta", *QUICK])
    return len(build_stream_from(cfg).train[0].y)
