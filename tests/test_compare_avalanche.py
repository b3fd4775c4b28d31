"""scripts/compare_avalanche.py: our naive and Avalanche's Naive agree on the same stream and init."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_avalanche.py"


@pytest.fixture(scope="module")
def compare_avalanche():
    spec = importlib.util.spec_from_file_location("compare_avalanche", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_help_names_the_flags(compare_avalanche, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare_avalanche.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--benchmark", "--epochs", "--seeds", "--strategies", "--ewc-lambda", "--quick", "--threads"):
        assert flag in text


def test_quick_naive_agrees_with_avalanche(compare_avalanche, capsys):
    # --quick: split digits, 30 epochs per experience (each experience is learned to ~95-100%,
    # so only the mini-batch order differs; measured |diff| <= 0.3 points over seeds 0-2).
    assert compare_avalanche.main(["--quick", "--strategies", "naive", "--seeds", "0"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    res = json.loads(out[-1])  # the last line of stdout is the JSON summary
    naive = res["strategies"]["naive"]
    assert res["benchmark"] == "split_digits"
    assert res["max_b_diff"] == 0  # identical initial weights and test data on both sides
    assert naive["n_compared"] == 1 and not naive["diverged"]
    assert abs(naive["acc_diff"]) < 2.0
    assert res["max_acc_diff"] == pytest.approx(abs(naive["acc_diff"]))
    assert any(line.startswith("| naive") for line in out)
