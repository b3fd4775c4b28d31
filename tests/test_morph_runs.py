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
