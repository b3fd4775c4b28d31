"""Studies behind the README's tables: experiments run together with their own baselines and figures."""

import sys


def overrides_first(argv: list[str] | None) -> list[str]:
    """The scripts' words with KEY=VALUE overrides moved to the front. argparse hands a ``nargs="+"``
    option every bare word after it, so ``--seeds 0 train.threads=2`` would give train.threads=2
    to --seeds; in front, only the positional overrides can take them."""
    words = list(sys.argv[1:] if argv is None else argv)
    is_pair = [("=" in w and not w.startswith("-")) for w in words]
    return [w for w, p in zip(words, is_pair) if p] + [w for w, p in zip(words, is_pair) if not p]


def print_study(rendered, figs: dict, missed: list[str], out) -> None:
    """What a study's script prints: its table, where the results are, the targets it missed, and
    the figures as one JSON line (last, for tools)."""
    import json

    from neumeta_cl.report import table

    console = table.console()
    console.print(rendered)
    console.print(f"results: {out}")
    console.print("targets: " + ("all met" if not missed else "not met: " + ", ".join(missed)))
    print(json.dumps(figs))
