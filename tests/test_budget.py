"""Deployment budgets (``hypernet.budget``): what fits, and how a class-incremental deployment
splits its parameters between the task classifier and the task networks."""

from __future__ import annotations

import pytest
import torch

from neumeta_cl.errors import ConfigError
from neumeta_cl.hypernet.budget import network_cost, split_for_budget, uniform_widths
from neumeta_cl.hypernet.generator import NeuMetaGenerator, task_classifier
from neumeta_cl.hypernet.layout import TargetLayout

LAYOUT = TargetLayout("cnn", (1, 8, 8), (16, 32), kernel_size=3, batchnorm=True)
HEADS = [2, 2, 3]
CLASSES = 7


def deployment_params(classifier, tasks) -> int:
    return (network_cost(LAYOUT, classifier, CLASSES, batchnorm=True)["params"]
            + sum(network_cost(LAYOUT, tasks, k)["params"] for k in HEADS))


def wider(widths):
    return LAYOUT.at_fraction((widths[0] + 1) / LAYOUT.widths[0])


def test_network_cost_counts_the_modules_parameters_and_batchnorm():
    net = LAYOUT.build((4, 8), CLASSES, batchnorm=True)
    cost = network_cost(LAYOUT, (4, 8), CLASSES, batchnorm=True)
    assert cost["params"] == sum(p.numel() for p in net.parameters())
    # BatchNorm adds a scale and a shift per hidden unit to the generated (BatchNorm-free) count
    assert cost["params"] == LAYOUT.param_count((4, 8), CLASSES) + 2 * (4 + 8)
    # a head over a 2 x 2 grid per channel reads 4 numbers per unit of the last layer
    pooled = network_cost(LAYOUT, (4, 8), CLASSES, batchnorm=True, pool_size=2)
    assert pooled["params"] == cost["params"] + 3 * 8 * CLASSES


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_split_gives_the_classifier_the_budget_first(fraction):
    """The budget of the uniform deployment at ``fraction``: the classifier as wide as leaves the
    task networks their narrowest trained width, then the task networks as wide as the rest allows."""
    uniform = LAYOUT.at_fraction(fraction)
    budget = {"params": deployment_params(uniform, uniform)}
    classifier, tasks = split_for_budget(LAYOUT, HEADS, budget, min_width=0.125, classifier_classes=CLASSES,
                                         classifier_batchnorm=True)
    narrowest = LAYOUT.at_fraction(0.125)
    assert deployment_params(classifier, tasks) <= budget["params"]
    assert classifier[0] > uniform[0] and narrowest[0] <= tasks[0] <= uniform[0]
    if classifier != LAYOUT.widths:  # one unit wider does not fit beside the narrowest task networks
        assert deployment_params(wider(classifier), narrowest) > budget["params"]
    if tasks != LAYOUT.widths:
        assert deployment_params(classifier, wider(tasks)) > budget["params"]


def test_split_of_the_full_deployment_is_the_full_deployment():
    full = LAYOUT.widths
    budget = {"params": deployment_params(full, full)}
    assert split_for_budget(LAYOUT, HEADS, budget, min_width=0.25, classifier_classes=CLASSES,
                            classifier_batchnorm=True) == (full, full)


def test_split_never_goes_below_the_narrowest_trained_width():
    quarter = LAYOUT.at_fraction(0.25)
    budget = {"params": deployment_params(quarter, quarter)}
    # trained down to 25%: nothing can be taken from the task networks, so the split is uniform
    assert split_for_budget(LAYOUT, HEADS, budget, min_width=0.25, classifier_classes=CLASSES,
                            classifier_batchnorm=True) == (quarter, quarter)
    assert uniform_widths(LAYOUT, 0.25)[0] == quarter and uniform_widths(LAYOUT)[0] == (1, 2)


def test_split_without_a_classifier_and_with_flops():
    half = LAYOUT.at_fraction(0.5)
    flops = sum(network_cost(LAYOUT, half, k)["flops"] for k in HEADS)
    assert split_for_budget(LAYOUT, HEADS, {"flops": flops}, min_width=0.25) == (None, half)
    assert split_for_budget(LAYOUT, HEADS, {"flops": flops - 1}, min_width=0.25)[1][0] < half[0]


@pytest.mark.parametrize("budget,message", [
    ({"params": 100}, r"below the smallest deployment of this generator \(3 task networks at widths \[4, 8\] and "
                      r"the task classifier: \{'params': \d+\}\); raise it\."),
    ({"latency": 3}, r"A budget takes `params` and/or `flops`, got \['latency'\]\."),
    ({}, r"A budget takes `params` and/or `flops`"),
])
def test_split_rejects_impossible_budgets(budget, message):
    with pytest.raises(ConfigError, match=message):
        split_for_budget(LAYOUT, HEADS, budget, min_width=0.25, classifier_classes=CLASSES, classifier_batchnorm=True)


def router_generator(min_width, router_pool=1) -> NeuMetaGenerator:
    """A class-incremental generator with a BatchNorm-free task classifier (no statistics needed)."""
    torch.manual_seed(0)
    layout = TargetLayout("cnn", (1, 8, 8), (16, 32), kernel_size=3)
    g = NeuMetaGenerator(layout, [], hidden=16, n_blocks=1, n_freqs=2, layer_dim=4, task_dim=4, film=False,
                         min_width=min_width, router_pool=router_pool, classes=[], n_classes=CLASSES,
                         routing="router")
    g.task_classifier = task_classifier(layout, CLASSES, router_pool)
    for classes in ([0, 1], [2, 3], [4, 5, 6]):
        g.add_task(classes)
    return g


@pytest.mark.parametrize("router_pool", [1, 2])
def test_router_with_a_budget_deploys_the_split(tmp_path, router_pool):
    from neumeta_cl.hypernet import load_generator, save_generator

    g = router_generator(min_width=0.125, router_pool=router_pool)
    uniform = g.router(fraction=0.25)
    budget = {"params": sum(p.numel() for p in uniform.parameters())}
    split = g.router(budget=budget)
    assert sum(p.numel() for p in split.parameters()) <= budget["params"]
    assert split.router.widths[0] > uniform.router.widths[0] and split.nets[0].widths == [2, 4]
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():  # the split is the same modules as asking for each part's width
        expected = g.router(widths=split.nets[0].widths)
        expected.router = g.classifier_at(split.router.widths)
        assert torch.equal(split(x), expected(x))
    save_generator(g, tmp_path / "g.pt")  # the narrowest trained width travels with the generator
    loaded = load_generator(tmp_path / "g.pt").router(budget=budget)
    assert loaded.router.widths == split.router.widths and loaded.router.pool_size == router_pool
    with torch.no_grad():
        assert torch.equal(loaded(x), split(x))
    with pytest.raises(ConfigError, match="at most one of widths, fraction or budget"):
        g.router(fraction=0.5, budget=budget)


def test_split_keeps_the_classifier_at_or_above_its_own_narrowest_width():
    """A classifier trained down to 50% only: a budget too small for it beside the narrowest task
    networks is refused, rather than deploying a classifier slice that never trained."""
    half, eighth = LAYOUT.at_fraction(0.5), LAYOUT.at_fraction(0.125)
    enough = {"params": deployment_params(half, eighth)}
    assert split_for_budget(LAYOUT, HEADS, enough, min_width=0.125, classifier_classes=CLASSES,
                            classifier_batchnorm=True, classifier_min_width=0.5) == (half, eighth)
    with pytest.raises(ConfigError, match="below the smallest deployment"):
        split_for_budget(LAYOUT, HEADS, {"params": enough["params"] - 1}, min_width=0.125,
                         classifier_classes=CLASSES, classifier_batchnorm=True, classifier_min_width=0.5)
