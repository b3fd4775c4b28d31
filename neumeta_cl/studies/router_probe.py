"""The task classifier of class-incremental NeuMeta, trained alone: which task does it infer, at each width?

``probe`` builds the NeuMeta module of a class-incremental experiment's router row and, for each
experience, runs the same code a ``neumeta`` run with ``routing=router`` runs for its router: the
new task is added, the memory takes the experience, and ``NeuMeta._train_router`` trains the
slimmable task classifier (ER-ACE, the sandwich rule, ``strategy.router_epochs``) and measures
every width's BatchNorm statistics and class offsets. What a run does besides (teachers, the INR)
is left out, so the router sees the same data in the same order but other random draws. After the
stream it reports, at every width, the fraction of each experience's test inputs sent to the right
task, with and without the class offsets (``hypernet.routing.fit_class_offsets``). It takes minutes
where a NeuMeta run takes most of an hour, so it is the loop to try a router in;
``scripts/router_probe.py`` is its command line.
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
    from neumeta_cl.strategies import OptimConfig, build_strategy

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
    generator, layout = neumeta.generator, neumeta.layout
    t0 = time.perf_counter()
    for exp in stream.train:  # in a run: the memory plugin, then NeuMeta.before_experience
        neumeta.memory.update(exp)
        neumeta._task_of(exp)
        neumeta._train_router(exp)
    classes = generator.classes
    out = {}
    for fraction in FRACTIONS:
        w = layout.at_fraction(fraction)
        plain = {k: v for k, v in generator.classifier_state[w].items() if k != "head.linear.bias"}
        row = {}
        for name, small in (("without_offsets", narrowed(layout, generator.task_classifier, w, plain)),
                            ("with_offsets", generator.classifier_at(w))):
            with torch.no_grad():
                row[name] = [float((task_log_probs(small(e.x), classes).argmax(1) == j).float().mean())
                             for j, e in enumerate(stream.test[: len(classes)])]
        out[f"{fraction:g}"] = {"with_offsets": round(sum(row["with_offsets"]) / len(classes), 4),
                                "without_offsets": round(sum(row["without_offsets"]) / len(classes), 4),
                                "per_experience": [round(a, 3) for a in row["with_offsets"]]}
    return {"experiment": experiment, "seed": seed, "seconds": round(time.perf_counter() - t0, 1), "task_accuracy": out}
