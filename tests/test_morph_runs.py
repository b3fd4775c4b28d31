"""Morphs inside real runs: a config schedule and the grow_ewc policy, recorded in results.json."""

import json

import pytest

from neumeta_cl.config import load
from neumeta_cl.run import run_continual


def _morphs(result):
    data = json.loads(result.results_path.read_text())
    return [(e["index"], m) for e in data["experiences"] for m in e.get("morphs", [])]


def test_scheduled_morphs_are_applied_and_recorded(fast_overrides):
    ov = fast_overrides + ["model.widths=[32,32]", "morph.schedule=[{at:2,op:widen,layer:0,to:48},{at:3,op:deepen,after:1}]",
                           "morph.every_n_steps=3"]
    result = run_continual(load(ov))
    assert result.outcome.status == "completed"
    morphs = _morphs(result)
    assert [(i, m["op"]) for i, m in morphs] == [(2, "widen"), (3, "deepen")]
    for _, m in morphs:
        assert m["preservation_error"] < 1e-5
        assert m["acc_seen_after"] == pytest.approx(m["acc_seen_before"])
        assert m["params_after"] > m["params_before"] and m["flops_after"] > m["flops_before"]
        assert m["steps_to_recover"] == 0 and m["stability_min"] <= m["acc_seen_before"]
    data = json.loads(result.results_path.read_text())
    assert data["experiences"][3]["morphs"][0]["detail"]["after"] == 1


def test_grow_ewc_grows_every_experience_and_keeps_the_function(fast_overrides):
    ov = fast_overrides + ["strategy=grow_ewc", "strategy.grow_by=8", "model.widths=[16,16]", "benchmark.scenario=task"]
    result = run_continual(load(ov))
    morphs = _morphs(result)
    assert [i for i, _ in morphs] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert all(m["preservation_error"] < 1e-5 for _, m in morphs)
    assert morphs[-1][1]["detail"]["to"] == 16 + 4 * 8
    assert result.outcome.R[-1].mean() > 0.8


def test_unknown_morph_operator_is_a_config_error(fast_overrides):
    from neumeta_cl.errors import ConfigError

    with pytest.raises(ConfigError, match="Unknown morph operator 'shrink'; valid morph operators are"):
        run_continual(load(fast_overrides + ["morph.schedule=[{at:1,op:shrink}]"]))


def test_prune_grow_freezes_old_tasks_exactly(fast_overrides):
    """Task labels + frozen units: an old experience's accuracy never changes after it is packed."""
    ov = fast_overrides + ["strategy=prune_grow", "model.widths=[64,64]", "benchmark.scenario=task"]
    result = run_continual(load(ov))
    R = result.outcome.R
    for j in range(4):
        assert all(R[i, j] == R[j, j] for i in range(j, 5)), R[:, j]
    assert R[-1].mean() > 0.9
    packs = _morphs(result)
    assert [i for i, _ in packs] == [0, 1, 2, 3, 4]  # after every experience
    for _, m in packs:
        assert m["op"] == "prune_grow" and m["params_after"] == m["params_before"] and m["wall_ms"] > 0
        assert m["acc_experience_after"] >= m["acc_experience_before"] - 0.1


def test_prune_grow_keeps_a_fraction_of_free_units(fast_overrides):
    from neumeta_cl.nets import MLP
    from neumeta_cl.strategies import OptimConfig, build_strategy

    from neumeta_cl.run import build_stream_from
    from tests.conftest import end_experience

    cfg = load(fast_overrides + ["benchmark.scenario=task"])
    stream = build_stream_from(cfg)
    module = build_strategy({"name": "prune_grow", "keep": 0.25, "retrain_steps": 10},
                            MLP(stream.input_shape, [40, 40], stream.n_classes, stream.heads), OptimConfig(), 32, 0)
    module.before_experience(stream.train[0])
    end_experience(module, stream.train[0])
    h = module.packing.history[-1]
    assert h["kept"] == [10, 10] and h["free_after"] == [30, 30]
    end_experience(module, stream.train[1])
    assert module.packing.history[-1]["free_after"] == [22, 22]  # round(0.25 * 30) = 8 more kept


def test_prune_grow_refuses_an_experience_whose_classes_are_frozen(fast_overrides):
    """Used from Python on a domain-incremental stream, the second experience's rows are already frozen."""
    from neumeta_cl.errors import ConfigError
    from neumeta_cl.nets import MLP
    from neumeta_cl.run import build_stream_from
    from neumeta_cl.strategies import OptimConfig, build_strategy
    from tests.conftest import end_experience

    stream = build_stream_from(load(fast_overrides + ["benchmark=permuted_digits"]))
    module = build_strategy({"name": "prune_grow", "retrain_steps": 0},
                            MLP(stream.input_shape, [32], stream.n_classes, stream.heads), OptimConfig(), 32, 0)
    module.before_experience(stream.train[0])
    end_experience(module, stream.train[0])
    module.before_experience(stream.train[1])
    with pytest.raises(ConfigError, match=r"experience 1 has classes \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\] whose head rows"):
        end_experience(module, stream.train[1])


def test_morph_reports_reach_the_wandb_run(fast_overrides):
    from neumeta_cl.tracking.wandb_file import read_run

    ov = [o for o in fast_overrides if not o.startswith("logger.mode")] + [
        "logger.mode=offline", "model.widths=[32]", "morph.schedule=[{at:1,op:widen,layer:0,to:40}]"]
    result = run_continual(load(ov))
    run = read_run(result.wandb_dir)
    rows = [h for h in run.history if any(k.startswith("morph/") for k in h)]
    assert len(rows) == 1
    m = {k.removeprefix("morph/0/"): v for k, v in rows[0].items() if k.startswith("morph/0/")}
    data = json.loads(result.results_path.read_text())
    rec = data["experiences"][1]["morphs"][0]
    assert m["params_after"] == rec["params_after"] and m["flops_before"] == rec["flops_before"]
    assert m["preservation_error"] == pytest.approx(rec["preservation_error"])
