"""The paths study (experiments/paths.yaml) end to end on its --quick settings (slow: a few minutes)."""

import json

import pytest

from neumeta_cl.experiment import experiment_dict
from neumeta_cl.studies import paths as study
from tests.conftest import needs_fmnist
from tests.test_table import _results


@pytest.mark.slow
@needs_fmnist
def test_paths_study_quick_gives_every_figure(tmp_path):
    spec = experiment_dict("paths")
    s = study.settings(spec, quick=True)
    assert s["mlp"]["widths"] == [64, 64, 64] and s["mlp"]["lr"] == spec["landscape"]["mlp"]["lr"]  # merged, not replaced
    land = study.landscape_study(s, tmp_path, log=lambda *_: None)
    assert all((tmp_path / f).exists() for f in ("landscape_mlp.png", "landscape_cnn.png", "landscape_paths.png"))
    rspec = study.rotated_spec(spec, quick=True)
    rspec["strategies"] = {k: rspec["strategies"][k] for k in ("naive", "flow")}
    summary, results = study.rotated_study(rspec, tmp_path, ["train.progress_bar=false", "logger.mode=disabled"])
    figs = study.figures(land, summary)
    for key in ("barrier_reduction_mlp", "barrier_reduction_mlp_repair", "bezier_over_linear", "ode_over_bezier",
                "align_seconds", "acc_rotated20"):
        assert key in figs
    assert set(figs["acc_rotated20"]) == {"naive", "flow"}
    assert land["mlp"]["naive"]["plain"] > land["mlp"]["weights"]["plain"]  # alignment lowers the barrier
    json.dumps(figs, allow_nan=False)  # one seed: its std is 0.0 (as the other studies' lines), never NaN
    assert figs["acc_rotated20"]["flow"][1] == 0.0
    from pathlib import Path

    from neumeta_cl.tracking.wandb_file import read_run

    folder = study.log_wandb("offline", tmp_path, land, figs)
    [logged] = read_run(Path(folder).parent).history
    assert logged["barrier/mlp/naive/plain"] == pytest.approx(land["mlp"]["naive"]["plain"])
    assert logged["plot/landscape_paths"]["format"] == "png"
    again, _ = study.read_rotated(tmp_path / "paths", ["naive", "flow"])
    assert [row[0] for row in again.rows] == ["naive", "flow"]


def test_read_rotated_keeps_two_rows_of_one_strategy_apart(tmp_path):
    """flow and flow_mcsgd both run strategy=flow: --from groups by the experiment's row (the sweep label)."""
    for label, accs in (("flow", [0.66, 0.65]), ("flow_mcsgd", [0.61, 0.60])):
        for seed, acc in enumerate(accs):
            folder = tmp_path / f"{label}-s{seed}"
            _results(folder, "flow", "rotated", seed, acc, forgetting=0.1)
            data = json.loads((folder / "results.json").read_text())
            data["sweep"] = {"name": "paths", "labels": {"strategy": label, "seed": str(seed)}}
            (folder / "results.json").write_text(json.dumps(data))
    summary, _ = study.read_rotated(tmp_path, ["flow", "flow_mcsgd"])
    assert study.figures(None, summary)["acc_rotated20"] == {"flow": [0.655, 0.0071], "flow_mcsgd": [0.605, 0.0071]}
    assert study.read_rotated(tmp_path / "none", ["flow"])[0] is None  # nothing finished yet: no table
