"""The command line: help, and every bad input as one clear sentence with exit code 2."""

import argparse
import json
import subprocess
import sys

import pytest

from neumeta_cl.cli import main
from neumeta_cl.config import experiment_choices, load
from neumeta_cl.experiment import load_experiment


def test_help_lists_groups_and_choices(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for text in ("benchmark", "split_fmnist", "permuted_digits", "strategy", "agem, clewi, der, er_ace, ewc, flow, gdumb, grow_ewc, joint, lwf, mas, naive, neumeta, prune_grow, replay, si", "quickstart"):
        assert text in out


@pytest.mark.parametrize("overrides, message", [
    (["benchmark=split_cifar"], "Unknown benchmark 'split_cifar'; valid benchmarks are: permuted_digits"),
    (["strategy=gem"], "Unknown strategy 'gem'; valid strategies are: agem, clewi, der, er_ace, ewc, flow, gdumb, grow_ewc, joint, lwf, mas, naive, neumeta, prune_grow, replay, si."),
    (["train.lrr=0.1"], "Unknown config key 'train.lrr'; valid keys here are: accelerator, batch_size"),
    (["foo=1"], "Unknown config key 'foo'"),
    (["benchmark=split_digits", "benchmark.n_experiences=3"], "Cannot split the 10 classes of digits into 3 experiences"),
    (["train.lr=0"], "train.lr must be positive, got 0"),
    (["train.lr=-0.1"], "train.lr must be positive"),
    (["train.batch_size=0"], "train.batch_size must be positive"),
    (["train.lr_decay=0"], "train.lr_decay must lie in (0, 1], got 0;"),
    (["train.lr_decay=1.5"], "train.lr_decay must lie in (0, 1], got 1.5;"),
    (["benchmark.n_experiences=0"], "benchmark.n_experiences must be positive"),
    (["model.widths=[64,-1]"], "model.widths[1] must be positive"),
    (["strategy=replay", "strategy.buffer_size=-5"], "strategy.buffer_size must be positive"),
    (["model=mlp", "model.name=resnet"], "Unknown model 'resnet'; valid models are: cnn, mlp."),
    (["seed=abc"], "seed must be an integer from 0 to 4294967295, got 'abc'"),
    (["seed=-1"], "seed must be an integer from 0 to 4294967295, got -1"),
    (["seed=1.5"], "seed must be an integer"),
    (["run_name=nan"], "run_name must be text, got nan (YAML reads it as a float); quote it"),
    (["run_name=a/b"], "run_name 'a/b' is not a folder name"),
    (["+foo=1"], "Unknown config key 'foo' (added with +)"),
    (["strategy=replay", "+strategy.bufer_size=100"], "Unknown config key 'strategy.bufer_size' (added with +); valid keys here are: buffer_size"),
    (["morph.schedule=[{at:9,op:widen,layer:0,to:300}]"],
     "morph.schedule has a morph at experience 9, but the stream has experiences 0..4"),
    (["strategy=neumeta", "morph.schedule=[{at:1,op:widen,layer:0,to:300}]"], "strategy=neumeta generates its networks"),
    (["benchmark=permuted_digits", "strategy=prune_grow"],
     "strategy=prune_grow freezes each experience's head rows, and on the domain-incremental permuted_digits stream"),
    (["resume=maybe"], "resume must be true or false"),
    (["morph.train_mode_gap=abc"], "morph.train_mode_gap must be true or false, got 'abc'."),
    (["morph.probe_size=0"], "morph.probe_size must be positive"),
])
def test_bad_input_is_one_sentence_and_exit_2(overrides, message, capsys, tmp_path):
    code = main(["run", *overrides, "logger.mode=disabled", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_missing_fmnist_says_how_to_install(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NEUMETA_CL_DEBIAN_FMNIST", str(tmp_path / "nowhere"))
    monkeypatch.setenv("NEUMETA_CL_CACHE", str(tmp_path / "cache"))
    from neumeta_cl.data import clear_caches

    clear_caches()
    code = main(["run", "benchmark=split_fmnist", "logger.mode=disabled", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err
    clear_caches()
    assert code == 2 and "apt-get install dataset-fashion-mnist" in err and err.count("\n") == 1


def test_real_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "neumeta_cl.cli", "run", "strategy=nope"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: Unknown strategy 'nope'; valid strategies are: "
                                   "agem, clewi, der, er_ace, ewc, flow, gdumb, grow_ewc, joint, lwf, mas, naive, neumeta, prune_grow, replay, si.")


def test_run_command_prints_table_and_paths(capsys, fast_overrides):
    code = main(["run", *fast_overrides, "strategy=naive"])
    out = capsys.readouterr().out
    assert code == 0 and "ACC" in out and "results.json" in out
    path = out.split("results: ")[1].split()[0]
    assert json.load(open(path))["status"] == "completed"


def test_experiment_with_variants_prints_a_table_and_writes_summary(capsys, tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        "name: tiny\n"
        "overrides: [benchmark=split_digits, 'model.widths=[32]', train.epochs=2, logger.mode=disabled]\n"
        "variants: {task_il: [benchmark.scenario=task], class_il: []}\n"
        "strategies: {naive: [strategy=naive], grow: [strategy=grow_ewc, strategy.grow_by=8]}\n"
        "seeds: [0, 1]\n")
    code = main(["experiment", str(spec), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    for label in ("task_il/naive", "task_il/grow", "class_il/naive", "class_il/grow"):
        assert label in out
    summary = json.loads(next((tmp_path / "out").glob("tiny/summary.json")).read_text())
    rows = {r["label"]: r for r in summary["table"]}
    assert rows["task_il/grow"]["acc_n"] == 2
    assert rows["task_il/grow"]["final_params_mean"] > rows["task_il/naive"]["final_params_mean"]
    assert rows["task_il/naive"]["acc_mean"] > rows["class_il/naive"]["acc_mean"]


def test_invalid_experiment_yaml_is_one_sentence(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nstrategies: {a: [x=[1,2]]}\n")
    assert main(["experiment", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "is not valid YAML (line 2)" in err and err.count("\n") == 1


@pytest.mark.parametrize("name", experiment_choices())
def test_every_pinned_experiment_resolves(name):
    """Each experiments/*.yaml, and its --quick variant, names real config keys and choices for every
    run it plans (one seed of each: the seed changes no key)."""
    from neumeta_cl.sweep.plan import expand, quick_variant

    spec = load_experiment(name)
    for variant in [spec, *([quick_variant(spec)] if spec.quick else [])]:
        seen = set()
        for job in expand(variant):
            key = tuple(sorted((k, v) for k, v in job.labels.items() if k != "seed"))
            if key in seen:
                continue
            seen.add(key)
            cfg = load(list(job.overrides))  # raises on an unknown key or choice
            assert cfg.strategy.name in {o.split("=", 1)[1] for o in job.overrides if o.startswith("strategy=")}


def test_an_unwritable_output_dir_is_one_sentence(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = main(["run", "benchmark=split_digits", "logger.mode=disabled", f"output_dir={blocker / 'runs'}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert f"Cannot create the run folder {blocker / 'runs'}" in err and "choose a writable folder with output_dir=PATH" in err
    assert blocker.read_text() == "not a folder"  # nothing lost


def test_bad_input_from_a_real_process_prints_no_traceback_and_no_warnings(tmp_path):
    """The real command: exit 2, one line on stderr (no qpsolvers warning, no Lightning banner)."""
    r = subprocess.run([sys.executable, "-m", "neumeta_cl.cli", "run", "seed=abc", f"output_dir={tmp_path}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: seed must be")


def test_script_overrides_may_follow_a_list_option():
    """`--seeds 0 train.threads=2` (as the README writes it): the override is not a seed."""
    from neumeta_cl.studies import overrides_first

    assert overrides_first(["--seeds", "0", "1", "train.threads=2", "--out=x", "--quick"]) == [
        "train.threads=2", "--seeds", "0", "1", "--out=x", "--quick"]
    parser = argparse.ArgumentParser()  # the study scripts' shape: a list option, then the overrides
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(overrides_first(["--seeds", "0", "1", "train.threads=2"]))
    assert args.seeds == [0, 1] and args.overrides == ["train.threads=2"]
