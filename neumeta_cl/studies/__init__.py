"""Studies behind the README's tables: experiments run together with their own baselines and figures."""


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
