"""The task classifier of class-incremental NeuMeta, trained alone: which task does it infer, at each width?

``probe`` trains the slimmable task classifier as a ``neumeta`` run with ``routing=router`` does
(the memory takes each experience before it trains, ER-ACE, the sandwich rule over the generator's
training widths, ``strategy.router_epochs``), on the stream and settings of a class-incremental
experiment, without the generator. After the stream it reports, at every width, the fraction of
each experience's test inputs sent to the right task, with and without the task offsets
(``hypernet.routing.fit_task_offsets``). It takes minutes where a NeuMeta run takes most of an
hour, so it is the loop to try a router in; ``scripts/router_probe.py`` is its command line.
The NeuMeta module is built as in a run (same seed, same order), but what the run does between
its router's epochs (teachers, the INR, each new task's embedding) is left out, so the numbers
are close to a run's router, not necessarily equal.
"""

from __future__ import annotations

import time

import torch

FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def probe(experiment: str, seed: int, overrides: list[str], label: str = "neumeta_router") -> dict:
    """Task-inference accuracy per width after the stream of ``experiment`` (its ``label`` row's
    settings, then ``overrides``): {fraction: {"with_offsets", "without_offsets", "per_experience"}}."""
    import pytorch_lightning as pl

    from neumeta_cl.config import compose, to_dict, validate
    from neumeta_cl.errors import ConfigError
    from neumeta_cl.experiment import load_experiment
    from neumeta_cl.hypernet.routing import task_log_probs
    from neumeta_cl.hypernet.slimmable import narrowed
    from neumeta_cl.nets import build_model
    from neumeta_cl.run import build_stream_from
    from neumeta_cl.strategies.fit import fit_module
    from neumeta_cl.strategies import OptimConfig, build_strategy
    from neumeta_cl.strategies.task_classifier import measure_widths

    spec = load_experiment(experiment)
    axis = next((a for a in spec.axes if a.name == "strategy"), None)
    if axis is None or label not in axis.labels or "strategy.routing=router" not in axis.overrides_of(label):
        raise ConfigError(f"Experiment '{experiment}' has no '{label}' row to take the router's settings from; "
                          "use neumeta_class_il or neumeta_class_il_digits.")
    cfg = compose([*spec.overrides, *axis.overrides_of(label), *overrides, f"seed={seed}"])
    validate(cfg)
    t = cfg.train
    stream = build_stream_from(cfg)
    pl.seed_everything(seed, verbose=False)
    net = build_model(to_dict(cfg.model), stream.input_shape, stream.n_classes, stream.heads)
    # The NeuMeta module checks every setting and builds the classifier, its memory and its widths.
    neumeta = build_strategy(to_dict(cfg.strategy), net, OptimConfig(t.optimizer, t.lr, t.momentum, t.weight_decay,
                                                                      t.lr_schedule), t.batch_size, seed)
    router, layout = neumeta.router, neumeta.layout
    clf = router.net
    classes, t0 = [], time.perf_counter()
    for exp in stream.train:
        classes.append(sorted(int(c) for c in exp.y.unique()))
        router.buffer.update(exp)  # as NeuMeta's memory plugin does, before the experience trains
        router.train().net.requires_grad_(True)
        router.before_experience(exp)
        fit_module(router, exp, epochs=neumeta.router_epochs, batch_size=t.batch_size,
                   seed=seed + neumeta.teacher_data_seed_offset * exp.index, accelerator="cpu")
        clf.requires_grad_(False)
    state = measure_widths(layout, clf, router.buffer.data["x"], router.buffer.data["y"], classes)
    out = {}
    for fraction in FRACTIONS:
        w = layout.at_fraction(fraction)
        plain = {k: v for k, v in state[w].items() if k != "head.linear.bias"}
        row = {}
        for name, measured in (("without_offsets", plain), ("with_offsets", state[w])):
            small = narrowed(layout, clf, w, measured)
            with torch.no_grad():
                row[name] = [float((task_log_probs(small(e.x), classes).argmax(1) == j).float().mean())
                             for j, e in enumerate(stream.test[: len(classes)])]
        out[f"{fraction:g}"] = {"with_offsets": round(sum(row["with_offsets"]) / len(classes), 4),
                                "without_offsets": round(sum(row["without_offsets"]) / len(classes), 4),
                                "per_experience": [round(a, 3) for a in row["with_offsets"]]}
    return {"experiment": experiment, "seed": seed, "seconds": round(time.perf_counter() - t0, 1), "task_accuracy": out}
