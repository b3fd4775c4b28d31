"""``neumeta-cl``: run one strategy on a stream, or a named experiment, from the command line."""

from __future__ import annotations

import argparse
import os
import sys

from neumeta_cl.errors import RunInterrupted, TrainingDiverged, UserError

USAGE_EXAMPLES = """\
examples:
  neumeta-cl run benchmark=split_fmnist strategy=ewc seed=3
  neumeta-cl run benchmark=split_digits benchmark.scenario=task model=cnn train.epochs=2
  neumeta-cl run strategy=replay strategy.buffer_size=1000 logger.mode=disabled
  neumeta-cl run benchmark.scenario=task model=cnn strategy=neumeta train.optimizer=adam train.lr=0.001
  neumeta-cl experiment quickstart
"""


def _choices_text() -> str:
    from neumeta_cl.config import GROUPS, experiment_choices, group_choices

    lines = ["config groups (choose with GROUP=CHOICE):"]
    lines += [f"  {g:<10} {', '.join(group_choices(g))}" for g in GROUPS]
    lines += ["", f"experiments: {', '.join(experiment_choices())}", "",
              "any key can be overridden with KEY=VALUE (e.g. train.lr=0.05); see configs/ for all keys."]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="neumeta-cl", description="Continual learning with morphable networks.",
                                epilog=_choices_text() + "\n\n" + USAGE_EXAMPLES, formatter_class=fmt)
    sub = p.add_subparsers(dest="command", metavar="{run,experiment,config}")
    r = sub.add_parser("run", help="train one strategy on one stream", formatter_class=fmt,
                       epilog=_choices_text() + "\n\n" + USAGE_EXAMPLES)
    r.add_argument("overrides", nargs="*", help="GROUP=CHOICE or KEY=VALUE")
    e = sub.add_parser("experiment", help="run a named experiment from experiments/ and print its table",
                       formatter_class=fmt, epilog=_choices_text())
    e.add_argument("name", help="an experiment name or a path to its YAML")
    e.add_argument("overrides", nargs="*", help="KEY=VALUE applied to every run")
    e.add_argument("--out", default="runs", help="root folder for the experiment's runs (default: runs)")
    c = sub.add_parser("config", help="print the resolved config for these overrides", formatter_class=fmt,
                       epilog=_choices_text())
    c.add_argument("overrides", nargs="*")
    return p


def _cmd_run(args) -> int:
    from neumeta_cl.config import load
    from neumeta_cl.report import table
    from neumeta_cl.run import run_continual
    from neumeta_cl.tracking.results import load_results

    cfg = load(args.overrides)
    result = run_continual(cfg, overrides=args.overrides, command=["neumeta-cl", "run", *args.overrides])
    console = table.console()
    if result.skipped:
        console.print(f"already finished: {result.results_path} (rerun with resume=false to run it again in a fresh folder)")
    frame = table.summary_frame(table.metrics_frame({cfg.strategy.name: [load_results(result.results_path)]}))
    console.print(table.render(frame, f"{cfg.benchmark.name} · {cfg.model.name} · seed {cfg.seed}"))
    console.print(f"results: {result.results_path}")
    if result.wandb_dir:
        console.print(f"W&B run: {result.wandb_dir}")
    return 0


def _cmd_experiment(args) -> int:
    from neumeta_cl.experiment import load_experiment, run_experiment
    from neumeta_cl.report import table

    console = table.console()
    spec = load_experiment(args.name)

    def done(label, seed, result):
        acc = result.outcome.R[-1].mean()
        what = "finished before" if result.skipped else "done"
        console.print(f"[green]{what}[/] {label} seed {seed}: ACC {acc:.3f}  ({result.results_path})")

    res = run_experiment(args.name, args.overrides, args.out, on_run_done=done)
    title = spec.get("description") or spec["name"]
    console.print(table.render(res.summary, title))
    console.print("BWT/FWT: 1/(T-1) averages (GEM paper convention); forgetting: Chaudhry et al. 2018.")
    console.print(f"table: {res.out_dir / 'table.md'}   summary: {res.out_dir / 'summary.json'}")
    for label, runs in res.runs.items():
        for r in runs:
            console.print(f"  {label}: results {r.results_path}" + (f"   W&B {r.wandb_dir}" if r.wandb_dir else ""))
    return 0


def _cmd_config(args) -> int:
    from omegaconf import OmegaConf

    from neumeta_cl.config import load

    print(OmegaConf.to_yaml(load(args.overrides)), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("WANDB_SILENT", "true")
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    handlers = {"run": _cmd_run, "experiment": _cmd_experiment, "config": _cmd_config}
    try:
        return handlers[args.command](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except TrainingDiverged as e:
        print(f"error: {e} Finished experiences are kept in results.json (status: failed).", file=sys.stderr)
        return e.exit_code
    except RunInterrupted as e:
        print(f"{e}: finished experiences are kept in results.json and the checkpoint (status: interrupted); "
              "rerun the same command to resume.", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # before or after the run (its own Ctrl-C is a RunInterrupted)
        print("interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
