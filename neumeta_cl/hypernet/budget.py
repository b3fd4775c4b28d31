"""What fits a deployment budget: parameters and/or FLOPs per sample (``{"params": n, "flops": m}``).

``widths_for_budget`` serves one network (``generate(task, budget=...)``): the widest uniformly
scaled network of the family that fits. ``split_for_budget`` serves a class-incremental deployment
(``router(budget=...)``): every seen task's network plus the task classifier, all run on each
input, so their costs add up. The classifier gets the budget first and the task networks the rest:
under the product of experts the classifier carries most of the class-incremental accuracy, while
narrow task networks behind a wide classifier lose almost nothing (README, "Class-incremental
streams"). Neither side goes below the narrowest width the generator was trained at.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from neumeta_cl.errors import ConfigError
from neumeta_cl.hypernet.layout import TargetLayout

KEYS = ("params", "flops")


def check_budget(budget: dict) -> dict:
    unknown = sorted(set(budget) - set(KEYS))
    if unknown or not budget:
        raise ConfigError(f"A budget takes `params` and/or `flops`, got {sorted(budget)}.")
    return budget


def network_cost(layout: TargetLayout, widths, n_classes: int, batchnorm: bool = False,
                 pool_size: int = 1) -> dict[str, int]:
    """Parameters (BatchNorm's scale and shift included) and FLOPs per sample of one network."""
    from neumeta_cl.morph.report import flops_per_sample

    net = layout.build(widths, n_classes, batchnorm=batchnorm, pool_size=pool_size)
    return {"params": sum(p.numel() for p in net.parameters()), "flops": flops_per_sample(net, layout.input_shape)}


def fits(costs: Sequence[dict], budget: dict) -> bool:
    return all(sum(c[k] for c in costs) <= budget[k] for k in budget)


def uniform_widths(layout: TargetLayout, min_width: float | None = None) -> list[tuple[int, ...]]:
    """Every uniformly scaled width from ``min_width`` of the full width (first layer from
    ceil(min_width * W0) units; None: one unit) to full. ``strategies.neumeta.training_widths`` samples
    these, so a deployment's narrowest width is the narrowest one trained."""
    top = layout.widths[0]
    first = 1 if min_width is None else max(1, math.ceil(min_width * top))
    return [layout.at_fraction(k / top) for k in range(first, top + 1)]


def widest(candidates: Sequence, ok: Callable) -> int | None:
    """Index of the last candidate that is ``ok`` (the candidates grow, so ``ok`` holds on a prefix)."""
    if not ok(candidates[0]):
        return None
    lo, hi = 0, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(candidates[mid]) else (lo, mid - 1)
    return lo


def widths_for_budget(layout: TargetLayout, n_classes: int, budget: dict) -> tuple[int, ...]:
    """The widest uniformly scaled network whose parameters and FLOPs per sample fit ``budget``."""
    check_budget(budget)
    candidates = uniform_widths(layout)
    best = widest(candidates, lambda w: fits([network_cost(layout, w, n_classes)], budget))
    if best is None:
        raise ConfigError(f"The budget {budget} is below the smallest network of this family "
                          f"(widths {list(candidates[0])}: {layout.param_count(candidates[0], n_classes)} parameters); "
                          "raise it.")
    return candidates[best]


def split_for_budget(layout: TargetLayout, heads: Sequence[int], budget: dict, *, min_width: float | None = None,
                     classifier_classes: int | None = None, classifier_batchnorm: bool = False,
                     classifier_min_width: float | None = None, classifier_pool: int = 1):
    """(classifier widths or None, task widths) of the class-incremental deployment that fits
    ``budget``: one network per task (``heads``: its outputs) at the task widths, plus a task
    classifier over ``classifier_classes`` (None: no classifier). The classifier takes the widest
    width that leaves the task networks their narrowest, then the task networks widen into the rest.
    ``min_width`` and ``classifier_min_width`` (None: ``min_width``): the narrowest each was trained at;
    ``classifier_pool``: the pooled grid its head reads (``nets.cnn.GridCNN``)."""
    check_budget(budget)
    candidates = uniform_widths(layout, min_width)
    classifier_candidates = uniform_widths(layout, classifier_min_width or min_width)

    def tasks_cost(widths) -> list[dict]:
        return [network_cost(layout, widths, k) for k in heads]

    def classifier_cost(widths) -> list[dict]:
        return [] if widths is None else [network_cost(layout, widths, classifier_classes, classifier_batchnorm,
                                                                  classifier_pool)]

    def too_small() -> ConfigError:
        smallest = [*classifier_cost(classifier_candidates[0] if classifier_classes is not None else None),
                    *tasks_cost(candidates[0])]
        need = {k: sum(c[k] for c in smallest) for k in budget}
        return ConfigError(f"The budget {budget} is below the smallest deployment of this generator "
                           f"({len(heads)} task networks at widths {list(candidates[0])}"
                           f"{' and the task classifier' if classifier_classes is not None else ''}: {need}); raise it.")

    classifier = None
    if classifier_classes is not None:
        narrowest_tasks = tasks_cost(candidates[0])
        best = widest(classifier_candidates, lambda w: fits([*classifier_cost(w), *narrowest_tasks], budget))
        if best is None:
            raise too_small()
        classifier = classifier_candidates[best]
    best = widest(candidates, lambda w: fits([*classifier_cost(classifier), *tasks_cost(w)], budget))
    if best is None:
        raise too_small()
    return classifier, candidates[best]
