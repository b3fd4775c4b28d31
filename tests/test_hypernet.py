"""neumeta_cl.hypernet: BatchNorm folding and TSP smoothing, weight coordinates, the target
layout, and the generator's contract (standalone modules at any width / fraction / budget)."""

import gc
import itertools
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from neumeta_cl.errors import ConfigError
from neumeta_cl.hypernet.coords import N_COORDS, encode, encoded_dim, fourier_features, jitter, weight_queries
from neumeta_cl.hypernet.budget import widths_for_budget
from neumeta_cl.hypernet.generator import NeuMetaGenerator, Request
from neumeta_cl.hypernet.inr import WeightINR
from neumeta_cl.hypernet.layout import TargetLayout
from neumeta_cl.hypernet.smoothing import (
    fold_batchnorm, hamiltonian_path, layer_weights, load_weights, path_length, smooth, total_variation,
    unit_features,
)
from neumeta_cl.morph.report import flops_per_sample
from neumeta_cl.nets import CNN, MLP

TOL = 1e-5
TSP_SECONDS = 0.2  # configs/strategy/neumeta.yaml: tsp_seconds


def randomise_batchnorm(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so folding has something to fold."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.3)
                m.weight.copy_(1 + torch.randn(n, generator=g) * 0.3)
                m.bias.copy_(torch.randn(n, generator=g) * 0.3)
    return net.eval()


def max_gap(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


NETS = {  # name -> (builder, input shape)
    "cnn2d": (lambda: CNN((1, 28, 28), [4, 6], 10), (1, 28, 28)),
    "cnn1d": (lambda: CNN((1, 40), [5, 7], 10), (1, 40)),
    "mlp": (lambda: MLP((1, 8, 8), [12, 9], 10), (1, 8, 8)),
}


# -- packaging ------------------------------------------------------------------------------------

def test_hypernet_is_a_regular_package_that_installs():
    """setuptools' package finder (pyproject: packages.find) only ships folders with __init__.py;
    without one, a non-editable install has no neumeta_cl.hypernet and strategy=neumeta breaks."""
    from setuptools import find_packages

    root = Path(__file__).resolve().parents[1]
    assert "neumeta_cl.hypernet" in find_packages(where=str(root), include=["neumeta_cl*"])


# -- smoothing: BatchNorm folding -------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 40)])
def test_folded_batchnorm_cnn_reproduces_the_network(shape):
    torch.manual_seed(0)
    net = randomise_batchnorm(CNN(shape, [4, 6], 10, batchnorm=True))
    layout = TargetLayout.from_net(net)
    weights = layer_weights(net)
    folded = load_weights(layout, weights, 10)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    x = torch.randn(16, *shape)
    assert max_gap(net, folded, x) <= TOL
    # The folding changed the weights (otherwise the comparison says nothing about BatchNorm).
    assert not torch.allclose(weights[0][0], net.blocks[0][0].weight)


def test_fold_batchnorm_without_conv_bias():
    torch.manual_seed(1)
    conv, bn = nn.Conv2d(3, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5)
    seq = randomise_batchnorm(nn.Sequential(conv, bn), seed=1)
    w, b = fold_batchnorm(conv.weight, None, bn)
    x = torch.randn(4, 3, 6, 6)
    with torch.no_grad():
        assert float((seq(x) - nn.functional.conv2d(x, w, b, padding=1)).abs().max()) <= TOL


def test_layer_weights_of_an_mlp_are_its_own_weights():
    torch.manual_seed(0)
    net = MLP((1, 8, 8), [12, 9], 10)
    weights = layer_weights(net)
    assert [tuple(w.shape) for w, _ in weights] == [(12, 64), (9, 12), (10, 9)]
    assert torch.equal(weights[1][0], net.blocks[1][0].weight)
    assert weights[0][0].data_ptr() != net.blocks[0][0].weight.data_ptr()  # copies, not views
    assert max_gap(net, load_weights(TargetLayout.from_net(net), weights, 10), torch.randn(8, 1, 8, 8)) <= TOL


# -- smoothing: TSP permutation -----------------------------------------------------------------

@pytest.mark.parametrize("name", list(NETS))
def test_smooth_preserves_function_and_fixed_axes(name):
    build, shape = NETS[name]
    torch.manual_seed(0)
    net = build()
    if isinstance(net, CNN):
        randomise_batchnorm(net)
    net.eval()
    layout = TargetLayout.from_net(net)
    weights = layer_weights(net)
    smoothed, orders = smooth(weights, TSP_SECONDS)

    assert len(orders) == len(weights) - 1
    for order, (w, _) in zip(orders, weights[:-1]):
        assert sorted(order) == list(range(w.shape[0]))
    assert any(order != sorted(order) for order in orders)  # a real permutation was applied

    x = torch.randn(16, *shape)
    assert max_gap(net, load_weights(layout, smoothed, 10), x) <= TOL

    # Input channels/pixels: the first layer's input axis is untouched, only its rows move.
    assert torch.equal(smoothed[0][0], weights[0][0][orders[0]])
    assert torch.equal(smoothed[0][1], weights[0][1][orders[0]])
    # Class outputs: the head's rows and bias stay in class order, only its inputs move.
    assert torch.equal(smoothed[-1][0], weights[-1][0][:, orders[-1]])
    assert torch.equal(smoothed[-1][1], weights[-1][1])


def test_smoothing_finds_shorter_paths_and_lowers_total_variation():
    torch.manual_seed(0)
    net = MLP((1, 8, 8), [32, 16], 10)
    weights = layer_weights(net)
    smoothed, orders = smooth(weights, TSP_SECONDS)
    gen = torch.Generator().manual_seed(0)
    # unit_features of layer l is unchanged by permuting layer l-1 (only its columns move).
    for layer, order in enumerate(orders):
        feats = unit_features(weights, layer)
        n = feats.shape[0]
        found = path_length(feats, order)
        assert found < path_length(feats, range(n))
        for _ in range(5):
            assert found < path_length(feats, torch.randperm(n, generator=gen).tolist())
    assert total_variation(smoothed) < total_variation(weights)


def test_total_variation_counts_only_hidden_axes():
    """Permuting the input pixels or the class order is not smoothing: TV must not see them."""
    w0, w1 = torch.tensor([[0.0, 5.0], [1.0, 7.0]]), torch.tensor([[2.0, 3.0], [-4.0, 9.0]])
    b0, b1 = torch.tensor([0.5, -0.5]), torch.tensor([1.0, 2.0])
    tv = total_variation([(w0, b0), (w1, b1)])
    # hidden units are w0's rows (+ b0) and w1's columns
    assert tv == pytest.approx((1 + 2) + 1 + (1 + 13))


def test_hamiltonian_path_is_a_permutation():
    torch.manual_seed(0)
    for n in (1, 2, 3, 17):
        order = hamiltonian_path(torch.randn(n, 4), TSP_SECONDS)
        assert sorted(order) == list(range(n))


def test_hamiltonian_path_repeats_exactly():
    """The solver is time-limited and returns a tour in either direction from run to run; the
    path is oriented (first unit < last unit) so that a run repeats exactly. Units along a line
    (64: the CNN's width) have one shortest path up to its direction."""
    for seed in range(10):
        gen = torch.Generator().manual_seed(seed)
        t = torch.randperm(64, generator=gen).double()  # positions along the line, shuffled
        points = t[:, None] * torch.randn(300, generator=gen, dtype=torch.float64) \
            + 0.01 * torch.randn(64, 300, generator=gen, dtype=torch.float64)
        first, second = hamiltonian_path(points, TSP_SECONDS), hamiltonian_path(points, TSP_SECONDS)
        assert first == second and first[0] < first[-1]


def test_hamiltonian_path_recovers_points_on_a_line():
    gen = torch.Generator().manual_seed(3)
    n = 20
    t = torch.arange(n, dtype=torch.float64) + 0.3 * torch.rand(n, generator=gen, dtype=torch.float64)
    direction = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    shuffle = torch.randperm(n, generator=gen)
    points = t[shuffle, None] * direction  # points on a line, listed in shuffled order
    order = hamiltonian_path(points, TSP_SECONDS)
    recovered = t[shuffle][order]
    assert torch.all(recovered[1:] > recovered[:-1]) or torch.all(recovered[1:] < recovered[:-1])


def test_hamiltonian_path_is_optimal_on_a_small_instance():
    torch.manual_seed(5)
    points = torch.randn(7, 3)
    best = min(path_length(points, p) for p in itertools.permutations(range(7)))
    # fast-tsp works on distances rounded to 1/60000 of the largest: allow that rounding.
    assert path_length(points, hamiltonian_path(points, TSP_SECONDS)) <= best * (1 + 1e-3)


# -- coords ---------------------------------------------------------------------------------------

def mlp_layout():
    return TargetLayout("mlp", (1, 8, 8), (16, 8))


def cnn_layout():
    return TargetLayout("cnn", (1, 8, 8), (6, 4), kernel_size=3)


@pytest.mark.parametrize("layout,widths", [(mlp_layout(), (16, 8)), (mlp_layout(), (5, 3)), (cnn_layout(), (4, 4))])
def test_weight_queries_rows_coordinates_and_flags(layout, widths):
    shapes, full = layout.shapes(widths, 3), layout.shapes(layout.widths, 3)
    q = weight_queries(shapes, full)
    assert len(q) == sum(s.n_out * s.n_in + s.n_out for s in shapes)
    assert q.coords.shape == (len(q), N_COORDS)
    assert q.is_bias.shape == (len(q), 1) and q.spacing.shape == (len(q), 2) and q.layer.shape == (len(q),)
    assert q.coords.min() >= 0 and q.coords.max() <= 1
    L = len(shapes)
    row = 0
    for l, ((start, mid, end), s, f) in enumerate(zip(q.bounds, shapes, full)):
        assert (start, mid, end) == (row, row + s.n_out * s.n_in, row + s.n_out * s.n_in + s.n_out)
        row = end
        assert torch.all(q.layer[start:end] == l)
        assert torch.all(q.is_bias[start:mid] == 0) and torch.all(q.is_bias[mid:end] == 1)
        c = q.coords[start:end]
        assert torch.allclose(c[:, 0], torch.full((end - start,), l / (L - 1)))
        assert torch.allclose(c[:, 3], torch.full((end - start,), s.n_out / f.n_out))
        assert torch.allclose(c[:, 4], torch.full((end - start,), s.n_in / f.n_in))
        # weight (i, j) of the layer is row start + i * n_in + j, at the cell centres
        i, j = s.n_out - 1, s.n_in - 1
        assert q.coords[start + i * s.n_in + j, 1:3].tolist() == pytest.approx([(i + 0.5) / s.n_out, (j + 0.5) / s.n_in])
        assert torch.all(q.coords[mid:end, 2] == 0)  # biases have no input position
        sp = q.spacing[start:end]
        assert torch.allclose(sp[:, 0], torch.full((end - start,), 1 / s.n_out if l < L - 1 else 0.0))
        assert torch.allclose(sp[: mid - start, 1], torch.full((mid - start,), 1 / s.n_in if l > 0 else 0.0))
        assert torch.all(sp[mid - start:, 1] == 0)
    # the fixed sides: first layer's input (pixels/channels) and the head's output (classes)
    first, head = q.bounds[0], q.bounds[-1]
    assert torch.all(q.spacing[first[0]:first[2], 1] == 0)
    assert torch.all(q.spacing[head[0]:head[2], 0] == 0)


def test_fourier_features_hand_checked():
    x = torch.tensor([[0.25, 0.5, 0.0, 1.0, 0.125]])
    enc = fourier_features(x, 2)
    assert enc.shape == (1, 25)
    assert torch.equal(enc[0, :5], x[0])
    s2 = math.sqrt(0.5)
    # per column: sin(pi x), sin(2 pi x), cos(pi x), cos(2 pi x)
    expected = [
        s2, 1.0, s2, 0.0,  # x = 0.25
        1.0, 0.0, 0.0, -1.0,  # x = 0.5
        0.0, 0.0, 1.0, 1.0,  # x = 0
        0.0, 0.0, -1.0, 1.0,  # x = 1
        math.sin(math.pi / 8), s2, math.cos(math.pi / 8), s2,  # x = 0.125
    ]
    assert enc[0, 5:].tolist() == pytest.approx(expected, abs=1e-6)
    assert torch.equal(fourier_features(x, 0), x)
    assert fourier_features(torch.rand(7, N_COORDS), 6).shape == (7, 5 * 13)


def test_encode_fourier_encodes_positions_and_keeps_sizes_raw():
    x = torch.tensor([[0.25, 0.5, 0.0, 0.625, 0.5]])
    enc = encode(x, 2)
    assert enc.shape == (1, encoded_dim(2)) == (1, 3 * 5 + 2)
    assert torch.equal(enc[0, :15], fourier_features(x[:, :3], 2)[0])
    assert enc[0, 15:].tolist() == [0.625, 0.5]  # an unseen size is an input between seen ones


def test_jitter_zero_is_identity_and_one_stays_in_the_cell():
    layout = mlp_layout()
    q = weight_queries(layout.shapes((5, 3), 3), layout.shapes(layout.widths, 3))
    assert torch.equal(jitter(q.coords, q.spacing, 0.0), q.coords)
    moved = jitter(q.coords, q.spacing, 1.0, torch.Generator().manual_seed(0))
    delta = moved - q.coords
    assert torch.all(delta[:, [0, 3, 4]] == 0)  # layer and sizes never move
    assert torch.all(delta[:, 1:3].abs() <= q.spacing / 2 + 1e-7)
    assert torch.all(delta[:, 1:3][q.spacing == 0] == 0)  # fixed sides stay put
    assert delta[:, 1:3].abs().max() > 0.3 * q.spacing.max()  # it does move the resizable ones
    assert torch.equal(q.coords, weight_queries(layout.shapes((5, 3), 3), layout.shapes(layout.widths, 3)).coords)


# -- layout ---------------------------------------------------------------------------------------

def test_layout_from_nets():
    mlp = TargetLayout.from_net(MLP((1, 8, 8), [16, 8], 10, activation="tanh"))
    assert (mlp.kind, mlp.input_shape, mlp.widths, mlp.activation, mlp.batchnorm) == ("mlp", (1, 8, 8), (16, 8), "tanh", False)
    assert (mlp.depth, mlp.n_layers) == (2, 3)
    cnn_bn = TargetLayout.from_net(CNN((1, 28, 28), [6, 4, 3], 10, kernel_size=5, batchnorm=True))
    assert (cnn_bn.kind, cnn_bn.input_shape, cnn_bn.widths, cnn_bn.kernel_size, cnn_bn.batchnorm) == \
        ("cnn", (1, 28, 28), (6, 4, 3), 5, True)
    cnn = TargetLayout.from_net(CNN((1, 40), [5], 10, batchnorm=False, activation="gelu"))
    assert (cnn.kind, cnn.input_shape, cnn.widths, cnn.kernel_size, cnn.batchnorm, cnn.activation) == \
        ("cnn", (1, 40), (5,), 3, False, "gelu")
    # a multi-head (task-incremental) net gives the same family
    assert TargetLayout.from_net(MLP((1, 8, 8), [16, 8], 10, heads=[2, 2])).widths == (16, 8)
    with pytest.raises(ConfigError, match="MLP or CNN"):
        TargetLayout.from_net(nn.Linear(3, 4))


@pytest.mark.parametrize("net", [
    MLP((1, 8, 8), [16, 8], 10),
    CNN((1, 8, 8), [6, 4], 10, batchnorm=False),
    CNN((1, 8, 8), [6, 4], 10, batchnorm=True),
    CNN((1, 40), [5, 7], 10, kernel_size=5),
])
def test_param_count_matches_the_built_network(net):
    layout = TargetLayout.from_net(net)
    for widths, k in ((layout.widths, 10), ((3, 2), 4), ((1, 1), 1), ((9, 11), 2)):
        built = layout.build(widths, k)
        assert list(built.widths) == list(widths)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in built.modules())
        assert layout.param_count(widths, k) == sum(p.numel() for p in built.parameters())
    if layout.batchnorm:  # the trained (teacher) member has BatchNorm, the generated one does not
        teacher = layout.build(layout.widths, 10, batchnorm=True)
        assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in teacher.modules())


def test_at_fraction_and_check_widths():
    layout = mlp_layout()
    assert layout.at_fraction(1.0) == (16, 8)
    assert layout.at_fraction(0.5) == (8, 4)
    assert layout.at_fraction(0.25) == (4, 2)
    assert layout.at_fraction(0.01) == (1, 1)  # never zero units
    assert layout.check_widths([3.0, 2]) == (3, 2)
    for bad in ([16], [16, 8, 4], [0, 8], [16, -1]):
        with pytest.raises(ConfigError, match="positive integers"):
            layout.check_widths(bad)
    with pytest.raises(ConfigError):
        layout.build([16], 10)
    shapes = layout.shapes((5, 3), 4)
    assert [(s.n_out, s.n_in, s.resizable_in, s.resizable_out) for s in shapes] == \
        [(5, 64, False, True), (3, 5, True, True), (4, 3, True, False)]
    assert cnn_layout().shapes((6, 4), 2)[0].weight_shape == (6, 1, 3, 3)


# -- generator ------------------------------------------------------------------------------------

HEADS = [2, 3, 2]


def small_generator(layout=None, seed: int = 0) -> NeuMetaGenerator:
    torch.manual_seed(seed)
    return NeuMetaGenerator(layout or mlp_layout(), HEADS, hidden=32, n_blocks=1, n_freqs=3, layer_dim=8, task_dim=8, film=True)


@pytest.fixture
def gen():
    return small_generator()


def alive(g: NeuMetaGenerator) -> NeuMetaGenerator:
    """Positive raw outputs (hence positive weights and biases): on positive inputs no ReLU of the
    generated net is dead, so every generated weight reaches the output. A fresh INR's outputs
    are small and smooth, and can leave a tiny generated net dead, which is not what these tests
    are about."""
    with torch.no_grad():
        for out in g.inr.outputs:
            out.bias.fill_(0.5)
    return g


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_generated_module_is_standalone(kind):
    layout = mlp_layout() if kind == "mlp" else cnn_layout()
    g = small_generator(layout)
    widths = (5, 3)
    x = torch.randn(6, 1, 8, 8)
    net = g.generate(1, widths=widths)
    assert isinstance(net, (MLP, CNN)) and not net.training
    assert list(net.widths) == list(widths)
    with torch.no_grad():
        expected = g.run(g.weights(1, widths), 1, widths, x)
        out = net(x)
    assert out.shape == (6, HEADS[1])
    assert float((out - expected).abs().max()) <= 1e-6
    g_ptrs = {t.data_ptr() for t in itertools.chain(g.parameters(), g.buffers())}
    assert not g_ptrs & {t.data_ptr() for t in itertools.chain(net.parameters(), net.buffers())}
    assert not any(isinstance(m, (NeuMetaGenerator, WeightINR)) for m in net.modules())
    assert sum(p.numel() for p in net.parameters()) == layout.param_count(widths, HEADS[1])
    # changing the generator does not change the module, and the module outlives it
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    del g
    gc.collect()
    with torch.no_grad():
        assert torch.equal(net(x), out)


@pytest.mark.parametrize("widths", [(16, 8), (7, 3), (1, 1), (13, 2), (23, 11)])
def test_generate_any_width(gen, widths):
    x = torch.randn(4, 1, 8, 8)
    net = gen.generate(0, widths=widths)
    assert list(net.widths) == list(widths)
    with torch.no_grad():
        assert torch.allclose(net(x), gen.run(gen.weights(0, widths), 0, widths, x), atol=1e-6)
    assert torch.isfinite(net(x)).all()


def test_generate_fraction_and_default(gen):
    x = torch.randn(4, 1, 8, 8)
    half = gen.generate(2, fraction=0.5)
    assert list(half.widths) == [8, 4]
    with torch.no_grad():
        assert torch.equal(half(x), gen.generate(2, widths=(8, 4))(x))
    assert list(gen.generate(2).widths) == [16, 8]
    assert list(gen.generate(2, fraction=1.0).widths) == [16, 8]


@pytest.mark.parametrize("budget", [200, 497, 500, 1000, 1193])
def test_generate_param_budget_is_the_widest_that_fits(gen, budget):
    layout, k = gen.layout, HEADS[0]
    net = gen.generate(0, budget={"params": budget})
    widths = tuple(net.widths)
    n = sum(p.numel() for p in net.parameters())
    assert n <= budget
    assert layout.at_fraction(widths[0] / layout.widths[0]) == widths  # uniformly scaled
    wider = layout.at_fraction((widths[0] + 1) / layout.widths[0])
    assert layout.param_count(wider, k) > budget


def test_generate_budget_above_full_width_gives_full_width(gen):
    full = gen.layout.param_count(gen.layout.widths, HEADS[1])
    assert list(gen.generate(1, budget={"params": full}).widths) == [16, 8]
    assert list(gen.generate(1, budget={"params": 10 * full}).widths) == [16, 8]
    assert list(gen.generate(1, budget={"params": full - 1}).widths) != [16, 8]


@pytest.mark.parametrize("flops", [500, 2000, 2335, 3000])
def test_generate_flops_budget_is_the_widest_that_fits(gen, flops):
    layout, k = gen.layout, HEADS[2]
    net = gen.generate(2, budget={"flops": flops})
    widths = tuple(net.widths)
    assert flops_per_sample(net, layout.input_shape) <= flops
    if widths == layout.widths:  # the budget covers the full width: nothing wider is offered
        assert flops_per_sample(layout.build(layout.widths, k), layout.input_shape) <= flops
        return
    wider = layout.at_fraction((widths[0] + 1) / layout.widths[0])
    assert flops_per_sample(layout.build(wider, k), layout.input_shape) > flops


def test_widths_for_budget_with_both_limits():
    layout = cnn_layout()
    params_only = widths_for_budget(layout, 2, {"params": 300})
    flops_only = widths_for_budget(layout, 2, {"flops": 4000})
    both = widths_for_budget(layout, 2, {"params": 300, "flops": 4000})
    assert both == min(params_only, flops_only)
    assert layout.param_count(both, 2) <= 300
    assert flops_per_sample(layout.build(both, 2), layout.input_shape) <= 4000


@pytest.mark.parametrize("kwargs,message", [
    (dict(budget={"params": 10}), "below the smallest network"),
    (dict(budget={"flops": 1}), "below the smallest network"),
    (dict(budget={"latency": 5}), "params.*flops"),
    (dict(budget={}), "params.*flops"),
    (dict(fraction=0.0), r"fraction must be in \(0, 1\]"),
    (dict(fraction=1.5), r"fraction must be in \(0, 1\]"),
    (dict(fraction=-0.2), r"fraction must be in \(0, 1\]"),
    (dict(widths=(8, 4), fraction=0.5), "at most one"),
    (dict(fraction=0.5, budget={"params": 1000}), "at most one"),
    (dict(widths=(8,)), "positive integers"),
    (dict(widths=(8, 0)), "positive integers"),
])
def test_generate_rejects_impossible_requests(gen, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        gen.generate(0, **kwargs)


@pytest.mark.parametrize("task", [3, -1])
def test_generate_rejects_unknown_task(gen, task):
    with pytest.raises(ConfigError, match=r"does not exist.*0\.\.2"):
        gen.generate(task)
    with pytest.raises(ConfigError):
        gen.weights(task)


def test_gradients_reach_the_inr_and_only_this_tasks_embedding(gen):
    task, widths = 1, (7, 3)
    gen = alive(gen)
    x = torch.randn(8, 1, 8, 8).abs()
    out = gen.run(gen.weights(task, widths, noise=0.5), task, widths, x)
    out.pow(2).sum().backward()
    emb = gen.inr.task_emb
    assert emb[task].grad is not None and emb[task].grad.abs().sum() > 0
    for k in range(len(HEADS)):
        if k != task:
            assert emb[k].grad is None or torch.all(emb[k].grad == 0)
    for name, p in gen.inr.named_parameters():
        if name.startswith("task_emb"):
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bfloat16_inr_generates_float32_weights_close_to_float32_and_saves_its_precision(tmp_path):
    """``precision=bfloat16`` autocasts the INR's products only: the raw outputs, the weights and the
    generated networks are float32, within bfloat16's rounding of the float32 INR's (the same
    parameters), gradients still reach every INR parameter, and a saved generator keeps its precision."""
    from neumeta_cl.hypernet import load_generator, save_generator
    from neumeta_cl.strategies.neumeta import flat

    fp32 = alive(small_generator(cnn_layout()))
    bf16 = NeuMetaGenerator(cnn_layout(), HEADS, hidden=32, n_blocks=1, n_freqs=3, layer_dim=8, task_dim=8, film=True,
                            precision="bfloat16")
    bf16.load_state_dict(fp32.state_dict())
    requests = [Request(1, (6, 4), 0.0), Request(2, (3, 2), 0.0)]
    exact, rounded = fp32.raw_many(requests), bf16.raw_many(requests)
    for a, b in zip(exact, rounded):
        a, b = flat(a), flat(b)
        assert b.dtype == torch.float32
        assert 1e-5 < float((a - b).abs().max()) < 0.05 * float(a.abs().max())  # rounded, not exact, and close
    rows = [torch.arange(5), torch.tensor([0, 3])]
    for a, b in zip(fp32.raw_rows(requests, rows), bf16.raw_rows(requests, rows)):
        assert b.dtype == torch.float32 and torch.allclose(a, b, atol=0.05 * float(a.abs().max()))
    x = torch.randn(4, 1, 8, 8).abs()
    bf16.run(bf16.weights(1, (6, 4)), 1, (6, 4), x).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in bf16.inr.named_parameters()
               if not n.startswith("task_emb"))
    save_generator(bf16, tmp_path / "g.pt")
    again = load_generator(tmp_path / "g.pt")
    assert again.arch["precision"] == "bfloat16"
    with torch.no_grad():
        assert torch.equal(flat(again.weights(2, (3, 2))), flat(bf16.weights(2, (3, 2))))
    with pytest.raises(ConfigError, match="Unknown INR precision 'fp8'; valid precisions are: float32, bfloat16"):
        NeuMetaGenerator(cnn_layout(), HEADS, hidden=8, n_blocks=1, n_freqs=1, layer_dim=2, task_dim=2, film=False,
                         precision="fp8")


def test_calibrate_then_unscale_scale_round_trip(gen):
    torch.manual_seed(2)
    teacher = layer_weights(MLP((1, 8, 8), [16, 8], HEADS[0]))
    assert not bool(gen.calibrated)
    gen.calibrate(teacher)
    assert bool(gen.calibrated)
    raw = gen.unscale(teacher)
    for (r, rb), (w, b) in zip(raw, teacher):
        assert float(r.std()) == pytest.approx(1.0, rel=1e-5)  # unit-scale targets in every layer
        assert float(rb.std()) == pytest.approx(1.0, rel=1e-5)
    back = gen.scale(raw, Request(0, gen.layout.widths))
    for (w2, b2), (w, b) in zip(back, teacher):
        assert torch.allclose(w2, w, atol=1e-6, rtol=1e-6) and torch.allclose(b2, b, atol=1e-6, rtol=1e-6)


def test_scale_keeps_preactivations_at_narrower_widths(gen):
    """w = r * s_l * N_in / n_in: at half width every weight of a resized fan-in doubles."""
    request = Request(0, (8, 4))
    assert gen.fan_in_ratios(request) == [1.0, 2.0, 2.0]
    raw = [(torch.ones(s.weight_shape), torch.ones(s.n_out)) for s in gen.layout.shapes((8, 4), HEADS[0])]
    for l, (w, b) in enumerate(gen.scale(raw, request)):
        assert torch.allclose(w, torch.full_like(w, float(gen.w_scale[l]) * [1, 2, 2][l]))
        assert torch.allclose(b, torch.full_like(b, float(gen.b_scale[l])))


def test_samples_average_jittered_generations(gen):
    widths = (7, 3)
    gen = alive(gen)
    averaged = gen.weights(1, widths, noise=0.5, samples=3, generator=torch.Generator().manual_seed(4))
    rng = torch.Generator().manual_seed(4)  # the same noise, drawn one generation at a time
    singles = [gen.weights(1, widths, noise=0.5, generator=rng) for _ in range(3)]
    plain = gen.weights(1, widths)
    for l, (w, b) in enumerate(averaged):
        mean_w = sum(s[l][0] for s in singles) / 3
        mean_b = sum(s[l][1] for s in singles) / 3
        assert torch.allclose(w, mean_w, atol=1e-6) and torch.allclose(b, mean_b, atol=1e-6)
    assert not torch.allclose(singles[0][0][0], singles[1][0][0])  # the noise does move the queries
    assert not torch.allclose(averaged[1][0], plain[1][0])

    x = torch.randn(4, 1, 8, 8).abs()
    with torch.no_grad():
        one = gen.generate(1, widths=widths)(x)
        torch.manual_seed(0)
        noisy = gen.generate(1, widths=widths, samples=4, noise=0.5)(x)
        quiet = gen.generate(1, widths=widths, samples=4, noise=0.0)(x)
        ignored = gen.generate(1, widths=widths, samples=1, noise=0.5)(x)  # one sample: no jitter
    assert not torch.allclose(noisy, one, atol=1e-4)
    assert torch.allclose(quiet, one, atol=1e-6)
    assert torch.equal(ignored, one)


# -- class-incremental use: the task is inferred from predictive entropy ---------------------------

def test_predictive_entropy_hand_checked():
    from neumeta_cl.hypernet.routing import predictive_entropy

    logits = [torch.tensor([row], dtype=torch.float64) for row in ([0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [30.0, 0.0])]
    assert float(predictive_entropy(logits[0])) == pytest.approx(math.log(2))
    assert float(predictive_entropy(logits[1])) == pytest.approx(math.log(4))
    assert float(predictive_entropy(logits[2])) == pytest.approx(0.0, abs=1e-10)


def test_route_by_entropy_hand_checked():
    from neumeta_cl.hypernet.routing import route_by_entropy

    task0 = torch.tensor([[5.0, 0.0], [0.0, 0.0], [1.0, 2.0]])  # certain / unsure / as unsure as task 1
    task1 = torch.tensor([[0.0, 0.0], [0.0, 4.0], [2.0, 1.0]])
    out = route_by_entropy([task0, task1], [[0, 1], [2, 3]], n_classes=5)
    assert out.shape == (3, 5)
    assert out.argmax(1).tolist() == [0, 3, 1]  # row 2: a tie goes to the earlier task
    assert torch.allclose(out[0, :2], task0[0].log_softmax(0)) and torch.isinf(out[0, 2:]).all()
    assert torch.allclose(out[1, 2:4], task1[1].log_softmax(0))
    assert torch.isinf(out[1, [0, 1, 4]]).all()
    # domain-incremental: tasks share their classes, the most certain one still decides
    shared = route_by_entropy([task0, task1], [[0, 1], [0, 1]], n_classes=2)
    assert shared.argmax(1).tolist() == [0, 1, 1]


def class_il_generator(layout=None) -> NeuMetaGenerator:
    torch.manual_seed(0)
    g = NeuMetaGenerator(layout or mlp_layout(), [], hidden=32, n_blocks=1, n_freqs=3, layer_dim=8, task_dim=8, film=True, classes=[],
                         n_classes=10)
    for classes in ([3, 7], [1, 4, 5]):
        g.add_task(classes)
    return g


def test_add_task_grows_the_generator_for_class_incremental_streams():
    g = class_il_generator()
    assert g.heads == [2, 3] and g.classes == [[3, 7], [1, 4, 5]] and len(g.inr.task_emb) == 2
    assert g.generate(1, widths=(5, 3))(torch.randn(4, 1, 8, 8)).shape == (4, 3)
    with pytest.raises(ConfigError, match="task-incremental use"):
        small_generator().add_task([0, 1])


def test_router_routes_generated_networks_and_survives_save_load(tmp_path):
    from neumeta_cl.hypernet import TaskRouter, load_generator, save_generator
    from neumeta_cl.hypernet.routing import route_by_entropy

    g = class_il_generator(cnn_layout())
    x = torch.randn(16, 1, 8, 8)
    router = g.router((5, 3))
    assert isinstance(router, TaskRouter) and not any(isinstance(m, WeightINR) for m in router.modules())
    with torch.no_grad():
        out = router(x)
        expected = route_by_entropy([g.generate(k, widths=(5, 3))(x) for k in (0, 1)], g.classes, 10)
    assert torch.equal(out, expected)
    finite = torch.isfinite(out)
    assert set(finite.sum(1).tolist()) <= {2, 3}  # each row: the classes of the one task chosen
    assert not finite[:, [0, 2, 6, 8, 9]].any()  # classes no task has learnt are never predicted
    save_generator(g, tmp_path / "g.pt")
    again = load_generator(tmp_path / "g.pt")
    assert again.classes == g.classes and again.n_classes == 10
    with torch.no_grad():
        assert torch.equal(again.router((5, 3))(x), out)


def test_router_needs_a_class_incremental_generator_with_tasks():
    with pytest.raises(ConfigError, match="class-incremental stream"):
        small_generator().router()
    empty = NeuMetaGenerator(mlp_layout(), [], hidden=32, n_blocks=1, n_freqs=3, layer_dim=8, task_dim=16, film=True, classes=[], n_classes=10)
    with pytest.raises(ConfigError, match="no tasks yet"):
        empty.router()


def test_neumeta_strategy_infers_tasks_on_class_incremental_streams():
    from neumeta_cl import config
    from neumeta_cl.config import to_dict
    from neumeta_cl.nets import build_model
    from neumeta_cl.run import build_stream_from
    from neumeta_cl.strategies import NeuMeta, OptimConfig, build_strategy

    def build(scenario):
        cfg = config.load(["strategy=neumeta", "benchmark=split_digits", f"benchmark.scenario={scenario}",
                           "model.widths=[16]"])
        stream = build_stream_from(cfg)
        net = build_model(to_dict(cfg.model), stream.input_shape, stream.n_classes, stream.heads)
        t = cfg.train
        module = build_strategy(to_dict(cfg.strategy), net, OptimConfig(t.optimizer, t.lr, t.momentum,
                                                                         t.weight_decay), t.batch_size, cfg.seed)
        return module, stream

    module, _ = build("task")
    assert isinstance(module, NeuMeta) and not module.infer_task
    assert module.generator.heads == [2, 2, 2, 2, 2] and module.generator.classes is None
    module, stream = build("class")  # one task per experience, added when the experience starts
    assert module.infer_task and module.generator.heads == [] and module.generator.n_classes == 10
    module.teacher_epochs = 0
    for exp in stream.train[:2]:
        module.before_experience(exp)
        assert module.task == exp.index and module.generator.classes[exp.index] == exp.classes
        assert module._local(exp.y).tolist() == [exp.classes.index(c) for c in exp.y.tolist()]
    with pytest.raises(ConfigError, match="in order"):
        module.before_experience(stream.train[4])


def test_load_generator_names_the_missing_file(tmp_path):
    from neumeta_cl.hypernet import load_generator

    with pytest.raises(ConfigError, match=r"No generator at .*missing\.pt; a neumeta run saves one"):
        load_generator(tmp_path / "missing.pt")


def test_inr_stem_per_layer_and_task_pair_is_the_stem_on_the_whole_row():
    """WeightINR.stem_of adds each (layer, task) pair's embedding product once: the same numbers
    as the stem on [position, layer embedding, task embedding] per query, and the same gradients."""
    torch.manual_seed(0)
    inr = WeightINR([9, 9, 64], 5, 32, 1, 6, 8, 16, False)
    q = 500
    position = torch.cat([encode(torch.rand(q, N_COORDS), 6), (torch.rand(q, 1) > 0.9).float()], 1)
    layer, task = torch.randint(0, 3, (q,)), torch.randint(0, 5, (q,))
    table = torch.stack(list(inr.task_emb))
    whole = inr.stem(torch.cat([position, inr.layer_emb(layer), table[task]], 1))
    grads = torch.autograd.grad(whole.square().sum(), [inr.stem.weight, inr.layer_emb.weight, inr.task_emb[2]])
    pairs = inr.stem_of(position, layer, task, table)
    assert (pairs - whole).abs().max() < 1e-5
    again = torch.autograd.grad(pairs.square().sum(), [inr.stem.weight, inr.layer_emb.weight, inr.task_emb[2]])
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in zip(grads, again))
