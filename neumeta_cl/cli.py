"""``neumeta-cl``: runs, sweeps, named experiments, and the tables and plots made from their results."""

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
  neumeta-cl run -m strategy=naive,ewc,replay seed=range(3) train.lr=0.01,0.05 launcher.workers=2
  neumeta-cl sweep strategies_digits launcher=ray
  neumeta-cl experiment quickstart
  neumeta-cl table runs/quickstart --rows strategy --metrics acc,bwt,forgetting --format latex
  neumeta-cl plot runs/quickstart --out plots/
  neumeta-cl reproduce table1 --quick --check
"""


def _choices_text() -> str:
    from neumeta_cl.config import GROUPS, experiment_choices, group_choices
    from neumeta_cl.sweep.launchers import launcher_choices
    from neumeta_cl.sweep.plan import sweep_choices

    lines = ["config groups (choose with GROUP=CHOICE):"]
    lines += [f"  {g:<10} {', '.join(group_choices(g))}" for g in GROUPS]
    lines += ["", f"experiments: {', '.join(experiment_choices())}", f"sweeps: {', '.join(sweep_choices())}",
              f"launchers (launcher=NAME, launcher.KEY=VALUE): {', '.join(launcher_choices())}", "",
              "any key can be overridden with KEY=VALUE (e.g. train.lr=0.05); see configs/ for all keys."]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="neumeta-cl", description="Continual learning with morphable networks.",
                                epilog=_choices_text() + "\n\n" + USAGE_EXAMPLES, formatter_class=fmt)
    sub = p.add_subparsers(dest="command", metavar="{run,sweep,experiment,reproduce,table,plot,sync,config}")
    r = sub.add_parser("run", help="train one strategy on one stream, or a sweep with -m", formatter_class=fmt,
                       epilog=_choices_text() + "\n\n" + USAGE_EXAMPLES)
    r.add_argument("-m", "--multirun", action="store_true",
                   help="a sweep: every combination of comma-separated values (key=a,b) and range(n)")
    r.add_argument("--name", help="the sweep's folder name under --out (with -m; default: multirun-<hash of the arguments>)")
    r.add_argument("--out", default="runs", help="root folder for a sweep's runs (with -m; default: runs)")
    r.add_argument("overrides", nargs="*", help="GROUP=CHOICE or KEY=VALUE (with -m also launcher=NAME, launcher.KEY=VALUE)")
    s = sub.add_parser("sweep", help="run a named sweep from configs/sweep/ (or a YAML path)", formatter_class=fmt,
                       epilog=_choices_text())
    _sweep_args(s)
    e = sub.add_parser("experiment", help="run a named experiment from experiments/ and print its table",
                       formatter_class=fmt, epilog=_choices_text())
    _sweep_args(e)
    rp = sub.add_parser("reproduce", help="run the sweep behind a README table and print the table", formatter_class=fmt,
                        epilog=_choices_text())
    rp.add_argument("name", help="a table: an experiment name (quickstart, morph_vs_fixed, table1, ...)")
    rp.add_argument("overrides", nargs="*", help="launcher=NAME and launcher.KEY=VALUE")
    rp.add_argument("--quick", action="store_true", help="the experiment's quick variant (small data, few seeds)")
    rp.add_argument("--check", action="store_true", help="compare each mean with the committed reference numbers")
    rp.add_argument("--tolerance", type=float, default=None, help="allowed distance in reference stds (default: the reference file's)")
    rp.add_argument("--write-reference", action="store_true", help="save this run's numbers as the reference (maintainers)")
    rp.add_argument("--out", default="runs")
    t = sub.add_parser("table", help="a table from results.json files (runs or sweep folders)", formatter_class=fmt)
    t.add_argument("paths", nargs="+", help="run folders, sweep folders or results.json files")
    t.add_argument("--rows", default="strategy", help="comma-separated keys: sweep axes or config keys (default: strategy)")
    t.add_argument("--cols", default="", help="comma-separated keys for column groups (e.g. benchmark)")
    t.add_argument("--metrics", default="acc,bwt,fwt,forgetting", help="comma-separated metrics (default: acc,bwt,fwt,forgetting)")
    t.add_argument("--format", default="markdown", choices=["markdown", "latex", "csv", "rich"])
    t.add_argument("--ci", action="store_true", help="add the 95%% confidence interval of each mean")
    t.add_argument("--title", default=None)
    t.add_argument("--output", "-o", default=None, help="write to this file instead of stdout")
    pl_ = sub.add_parser("plot", help="plots from results.json files: R heatmaps, accuracy along the stream, "
                         "parameters and FLOPs, accuracy against width", formatter_class=fmt)
    pl_.add_argument("paths", nargs="+")
    pl_.add_argument("--by", default="strategy", help="the key whose values get one line or panel each (default: strategy)")
    pl_.add_argument("--kinds", default="heatmap,stream,size,width", help="comma-separated: heatmap, stream, size, width")
    pl_.add_argument("--out", default="plots", help="folder for the PNG and PDF files (default: plots)")
    pl_.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                     help="only runs whose KEY (a sweep axis or config key) is VALUE; repeatable")
    pl_.add_argument("--wandb", action="store_true", help="also log the plots to each run's W&B run as images")
    sy = sub.add_parser("sync", help="upload a sweep's offline W&B runs", formatter_class=fmt)
    sy.add_argument("paths", nargs="+", help="sweep or run folders")
    sy.add_argument("--dry-run", action="store_true", help="list the offline runs without uploading")
    c = sub.add_parser("config", help="print the resolved config for these overrides", formatter_class=fmt,
                       epilog=_choices_text())
    c.add_argument("overrides", nargs="*")
    return p


def _sweep_args(p) -> None:
    p.add_argument("name", help="a name or a path to its YAML")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE applied to every run; launcher=NAME, launcher.KEY=VALUE")
    p.add_argument("--out", default="runs", help="root folder for its runs (default: runs)")
    p.add_argument("--seeds", default=None, help="replace its seeds, e.g. 0,1,2 or range(5)")
    p.add_argument("--quick", action="store_true", help="its quick variant, where it has one")


def split_launcher(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(run overrides, launcher overrides): ``launcher=NAME`` and ``launcher.KEY=VALUE`` go to the launcher."""
    launcher = [o for o in overrides if o.split("=", 1)[0] == "launcher" or o.startswith("launcher.")]
    return [o for o in overrides if o not in launcher], launcher


def _cmd_run(args) -> int:
    if args.multirun:
        from neumeta_cl.sweep.plan import from_multirun

        run_ov, launcher = split_launcher(args.overrides)
        spec = from_multirun(run_ov, args.name)
        return _sweep(spec, [], launcher, args.out, table_rows=[a.name for a in spec.axes if a.name != "seed"])
    from neumeta_cl.config import load
    from neumeta_cl.report import table
    from neumeta_cl.report.runs import Run
    from neumeta_cl.run import run_continual
    from neumeta_cl.tracking.results import load_results

    cfg = load(args.overrides)
    result = run_continual(cfg, overrides=args.overrides, command=["neumeta-cl", "run", *args.overrides])
    console = table.console()
    if result.skipped:
        console.print(f"already finished: {result.results_path} (rerun with resume=false to run it again in a fresh folder)")
    run = Run(result.results_path, load_results(result.results_path))
    console.print(table.rich_table(table.build([run], ["strategy"], title=f"{cfg.benchmark.name} · {cfg.model.name} · seed {cfg.seed}")))
    console.print(f"results: {result.results_path}")
    if result.wandb_dir:
        console.print(f"W&B run: {result.wandb_dir}")
    return 0


def _seeds(text: str | None) -> list[int] | None:
    if not text:
        return None
    from neumeta_cl.sweep.plan import seeds_of

    return seeds_of(text)


def _sweep(spec, extra, launcher, out, table_rows=None) -> int:
    """Run a sweep, print its summary and its table (rows: its table spec, else ``table_rows``)."""
    from neumeta_cl.experiment import run_experiment
    from neumeta_cl.report import table
    from neumeta_cl.sweep.controller import print_summary
    from neumeta_cl.sweep.progress import stderr_console

    console = table.console()
    if table_rows is not None and not spec.table:
        spec.table = {"rows": table_rows or ["strategy"]}
    res = run_experiment(spec, extra, out, launcher=launcher, console=stderr_console(), command=sys.argv,
                         raise_on_failure=False)
    print_summary(res.sweep, console)
    if res.table.cells:
        console.print(table.rich_table(res.table))
        console.print(f"table: {res.out_dir / 'table.md'} (also .tex, .csv)")
    return res.sweep.exit_code


def _cmd_sweep(args, where=None) -> int:
    from neumeta_cl.sweep.plan import load_spec, quick_variant, with_seeds

    spec = load_spec(args.name, where)
    if args.quick:
        spec = quick_variant(spec)
    if (seeds := _seeds(args.seeds)):
        spec = with_seeds(spec, seeds)
    extra, launcher = split_launcher(args.overrides)
    return _sweep(spec, extra, launcher, args.out)


def _cmd_experiment(args) -> int:
    from neumeta_cl.paths import config_dir, experiments_dir

    return _cmd_sweep(args, where=(experiments_dir(), config_dir() / "sweep"))


def _cmd_reproduce(args) -> int:
    from neumeta_cl.reproduce import reproduce

    _, launcher = split_launcher(args.overrides)
    rest = [o for o in args.overrides if o not in launcher]
    if rest:
        raise UserError(f"reproduce takes launcher settings only (launcher=NAME, launcher.KEY=VALUE), got {' '.join(rest)}; "
                        "a reproduction runs the committed sweep as it is.")
    return reproduce(args.name, quick=args.quick, check_reference=args.check, launcher=launcher, out_root=args.out,
                     tolerance=args.tolerance, write_reference=args.write_reference)


def _cmd_table(args) -> int:
    from neumeta_cl.report import table
    from neumeta_cl.report.runs import find_runs

    split = lambda text: [k.strip() for k in text.split(",") if k.strip()]  # noqa: E731
    t = table.build(find_runs(args.paths), split(args.rows), split(args.cols), split(args.metrics), ci=args.ci,
                    title=args.title)
    if args.format == "rich":
        table.console().print(table.rich_table(t))
        for line in table.left_out_lines(t):
            print(line)
        return 0
    text = table.FORMATS[args.format](t)
    if args.output:
        from pathlib import Path

        Path(args.output).write_text(text + "\n")
        print(f"table: {args.output}")
    else:
        print(text)
    return 0


def _cmd_plot(args) -> int:
    from neumeta_cl.report.plots import plot_all
    from neumeta_cl.report.runs import find_runs

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    runs = find_runs(args.paths)
    for cond in args.where:
        key, sep, value = cond.partition("=")
        if not sep:
            raise UserError(f"--where takes KEY=VALUE, got {cond!r}.")
        runs = [r for r in runs if r.value(key) == value]
    if not runs:
        raise UserError(f"No runs match {' and '.join(args.where)}.")
    written = plot_all(runs, args.by, kinds, args.out, log_wandb=args.wandb)
    for path in written:
        print(path)
    return 0


def _cmd_sync(args) -> int:
    from neumeta_cl.tracking.sync import sync

    return sync(args.paths, dry_run=args.dry_run)


def _cmd_config(args) -> int:
    from omegaconf import OmegaConf

    from neumeta_cl.config import load

    print(OmegaConf.to_yaml(load(args.overrides)), end="")
    return 0


HANDLERS = {"run": _cmd_run, "sweep": _cmd_sweep, "experiment": _cmd_experiment, "reproduce": _cmd_reproduce,
            "table": _cmd_table, "plot": _cmd_plot, "sync": _cmd_sync, "config": _cmd_config}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("WANDB_SILENT", "true")
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return HANDLERS[args.command](args)
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
