"""scripts/bench_morph.py --quick: a smoke run of every morph operator on small digits nets."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_morph.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_morph", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_morph_quick(capsys):
    summary = _load().main(["--quick", "--repeats", "1", "--steps", "20"])
    out = capsys.readouterr().out.strip().splitlines()
    last = json.loads(out[-1])  # exactly one line of JSON, last on stdout
    assert last == json.loads(json.dumps(summary))
    for key in ("max_ms_mlp", "max_preservation_error", "replace_block_ms_mlp", "per_op", "target_ms_met",
                "target_preservation_met"):
        assert key in last, key
    assert last["max_preservation_error"] < 1e-5
    ops = {k.split("[")[0] for k in last["per_op"]}
    for op in ("widen", "deepen", "prune", "extend_classes", "set_activation", "replace_block"):
        assert f"mlp/{op}" in ops and f"cnn/{op}" in ops, op
    assert "mlpx5h/add_head" in ops and "cnnx5h/add_head" in ops
    assert all(v["wall_ms"] > 0 for v in last["per_op"].values())
    prunes = [v for k, v in last["per_op"].items() if "/prune[" in k]
    assert prunes and all(0 <= v["acc_after"] <= 1 for v in prunes)
    assert "max_ms_mlp" in last and last["max_ms_mlp_op"].split("[")[0].endswith(("widen", "deepen", "prune",
                                                                                  "extend_classes", "set_activation",
                                                                                  "add_head"))
