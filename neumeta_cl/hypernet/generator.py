"""NeuMeta's generator: a task-conditioned INR that writes the weights of a network of any width.

``weights(task, widths)`` returns the generated (weight, bias) of every layer, differentiable in
the INR; ``generate(task, widths=... | fraction=... | budget=...)`` returns an ordinary
``nn.Module`` that runs without the hypernetwork.

Scaling: a raw output ``r`` becomes ``w = r * s_l * N_in / n_in`` (``N_in`` the layer's full
fan-in, ``n_in`` its fan-in at this width, ``s_l`` the layer's scale). A layer with half its
inputs then sums half as many terms, each twice as large: the pre-activations keep their scale,
as when a continuous integral is sampled more coarsely. Biases get their own scale only. The
scales are the spread of the first trained network's weights (``calibrate``), so the INR's raw
outputs are of unit size in every layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from neumeta_cl.errors import ConfigError
from neumeta_cl.hypernet.budget import split_for_budget, widths_for_budget
from neumeta_cl.hypernet.coords import Queries, jitter, weight_queries
from neumeta_cl.hypernet.inr import WeightINR
from neumeta_cl.hypernet.layout import TargetLayout
from neumeta_cl.hypernet.routing import ROUTINGS, TaskRouter
from neumeta_cl.hypernet.slimmable import has_batchnorm, narrowed, pool_size

Weights = list[tuple[torch.Tensor, torch.Tensor]]  # (weight, bias) per generated layer
PRECISIONS = ("float32", "bfloat16")  # of the INR's matrix products (``NeuMetaGenerator.inr_precision``)


@dataclass(frozen=True)
class Request:
    task: int
    widths: tuple[int, ...]
    noise: float = 0.0  # coordinate jitter, in grid cells


class NeuMetaGenerator(nn.Module):
    # The INR's sizes have no defaults here: they live in configs/strategy/neumeta.yaml.
    def __init__(self, layout: TargetLayout, heads: list[int], *, hidden: int, n_blocks: int, n_freqs: int,
                 layer_dim: int, task_dim: int, film: bool, precision: str = "float32", min_width: float | None = None,
                 router_min_width: float | None = None, router_pool: int = 1, classes: list[list[int]] | None = None,
                 n_classes: int | None = None, routing: str = "entropy"):
        super().__init__()
        if precision not in PRECISIONS:
            raise ConfigError(f"Unknown INR precision '{precision}'; valid precisions are: {', '.join(PRECISIONS)}.")
        self.arch = {"hidden": hidden, "n_blocks": n_blocks, "n_freqs": n_freqs, "layer_dim": layer_dim,
                     "task_dim": task_dim, "film": film, "precision": precision,
                     # the narrowest widths trained, fractions of the full one (None: unknown; the task
                     # classifier's: as the generator's); deployments within a budget never go below them
                     "min_width": min_width, "router_min_width": router_min_width,
                     "router_pool": router_pool}  # the task classifier's pooled grid (``task_classifier``)
        self.layout, self.heads = layout, list(heads)
        # Class-incremental use: the global classes each task's outputs stand for, and how many
        # classes there are in all (``router``). None for task-incremental use.
        if (classes is None) != (n_classes is None):
            raise ValueError("classes and n_classes go together (class-incremental use) or not at all.")
        if routing not in ROUTINGS:
            raise ConfigError(f"Unknown routing '{routing}'; valid routings are: {', '.join(ROUTINGS)}.")
        self.classes = None if classes is None else [list(map(int, c)) for c in classes]
        self.n_classes = n_classes
        # How a class-incremental generator infers the task (``hypernet.routing``): with a router,
        # ``task_classifier`` is a small ordinary network over all classes, trained on a memory;
        # with a calibration, one (scale, shift) per task.
        self.routing = routing if self.infers_task else None
        self.task_classifier: nn.Module | None = None
        # Per width, what is measured on the memory after each experience: the task classifier's
        # BatchNorm statistics and its head's bias with the class offsets (``hypernet.routing``).
        self.classifier_state: dict[tuple, dict] = {}
        self.calibration: list[list[float]] = []
        full = layout.shapes(layout.widths, max(heads, default=1))
        self.inr = WeightINR([s.kernel_numel for s in full], len(heads), hidden, n_blocks, n_freqs, layer_dim,
                             task_dim, film)
        # Output scales per layer (see ``calibrate``); until then 1/sqrt(full fan-in).
        self.register_buffer("w_scale", torch.tensor([1.0 / math.sqrt(f.fan_in) for f in full]))
        self.register_buffer("b_scale", torch.tensor([1.0 / math.sqrt(f.fan_in) for f in full]))
        self.register_buffer("calibrated", torch.tensor(False))
        self._queries: dict[tuple, Queries] = {}
        self._modules_by_shape: dict[tuple, nn.Module] = {}

    # -- queries -------------------------------------------------------------------------------
    def check_task(self, task: int) -> int:
        if not 0 <= task < len(self.heads):
            raise ConfigError(f"Task {task} does not exist; this generator knows tasks 0..{len(self.heads) - 1}.")
        return int(task)

    @property
    def infers_task(self) -> bool:
        """Class-incremental use: tasks are added per experience and inferred at test time."""
        return self.classes is not None

    def add_task(self, classes: list[int]) -> int:
        """A new task whose outputs stand for the global ``classes`` (class-incremental use: one
        task per experience, added when it starts); returns its id."""
        if not self.infers_task:
            raise ConfigError("This generator was built for task-incremental use; its tasks are fixed.")
        device = self.inr.stem.weight.device
        self.inr.task_emb.append(nn.Parameter(torch.randn(self.arch["task_dim"], device=device)))
        self.heads.append(len(classes))
        self.classes.append(list(map(int, classes)))
        return len(self.heads) - 1

    def queries(self, task: int, widths) -> Queries:
        widths = self.layout.check_widths(widths)
        key = (widths, self.heads[task])
        if key not in self._queries:
            shapes = self.layout.shapes(widths, self.heads[task])
            full = self.layout.shapes(self.layout.widths, self.heads[task])
            q = weight_queries(shapes, full)
            self._queries[key] = q
        q = self._queries[key]
        device = self.inr.stem.weight.device
        if q.coords.device != device:
            q = Queries(q.coords.to(device), q.is_bias.to(device), q.spacing.to(device), q.layer.to(device), q.bounds)
            self._queries[key] = q
        return q

    # -- generation ----------------------------------------------------------------------------
    def raw_many(self, requests: list[Request], generator: torch.Generator | None = None) -> list[Weights]:
        """The INR's unscaled outputs for several networks, from one pass over all their queries.
        Raw outputs have about unit scale in every layer: losses compare them, not the weights."""
        qs = [self.queries(self.check_task(r.task), r.widths) for r in requests]
        coords = torch.cat([jitter(q.coords, q.spacing, r.noise, generator) for q, r in zip(qs, requests)])
        device = coords.device
        task = torch.cat([torch.full((len(q),), r.task, dtype=torch.long, device=device) for q, r in zip(qs, requests)])
        out = []
        with self.inr_precision():
            h = self.inr.features(coords, torch.cat([q.is_bias for q in qs]), torch.cat([q.layer for q in qs]), task)
            # One split into every (network, layer) block: its backward is one concatenation, where a
            # slice per block would add a zero-filled copy of all of h's gradient per block.
            blocks = iter(h.split([end - start for q in qs for start, _, end in q.bounds]))
            for q, r in zip(qs, requests):
                shapes = self.layout.shapes(r.widths, self.heads[r.task])
                layers = []
                for l, ((start, mid, _), s) in enumerate(zip(q.bounds, shapes)):
                    raw = self.inr.outputs[l](next(blocks)).float()
                    layers.append((raw[: mid - start].reshape(s.weight_shape), raw[mid - start:, 0]))
                out.append(layers)
        return out

    def raw_rows(self, requests: list[Request], rows: list[torch.Tensor]) -> list[torch.Tensor]:
        """The raw outputs of only some queries of several networks (``rows``: query indices, one
        tensor per request), from one pass: each an [n, k] matrix, k the largest kernel; a query's
        outputs come first, zeros after (``row_mask`` says which entries are outputs). With every
        row, ``row_mask`` selects exactly ``flat(raw_many(...))``'s values. No coordinate noise:
        regularisers compare these with stored outputs at the same coordinates."""
        if any(r.noise for r in requests):
            raise ValueError("raw_rows evaluates queries where they sit; ask for noise=0")
        qs = [self.queries(self.check_task(r.task), r.widths) for r in requests]
        device = self.inr.stem.weight.device
        rows = [i.to(device) for i in rows]
        coords = torch.cat([q.coords[i] for q, i in zip(qs, rows)])
        layer = torch.cat([q.layer[i] for q, i in zip(qs, rows)])
        task = torch.cat([torch.full((len(i),), r.task, dtype=torch.long, device=device) for r, i in zip(requests, rows)])
        out = coords.new_zeros(len(coords), self.kernel_width)
        with self.inr_precision():
            h = self.inr.features(coords, torch.cat([q.is_bias[i] for q, i in zip(qs, rows)]), layer, task)
            for l, head in enumerate(self.inr.outputs):
                at = (layer == l).nonzero().squeeze(1)
                if len(at):
                    out[at, : head.out_features] = head(h[at]).float()
        return list(out.split([len(i) for i in rows]))

    def inr_precision(self):
        """The INR's matrix products in ``bfloat16`` (autocast: float32 parameters, bfloat16 products),
        or as they are. The raw outputs, and the generated networks they make, stay float32. bfloat16
        is faster where the hardware has it (AVX512-BF16 or AMX CPUs, recent GPUs); elsewhere it is
        emulated, and slower."""
        device = self.inr.stem.weight.device
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.arch["precision"] == "bfloat16")

    @property
    def kernel_width(self) -> int:
        """Columns of ``raw_rows``' matrix: the largest kernel any output head writes."""
        return max(head.out_features for head in self.inr.outputs)

    def row_mask(self, request: Request) -> torch.Tensor:
        """[Q, k] booleans: which entries of ``raw_rows``' matrix are outputs of each query (a weight
        query's whole kernel; a bias query's first value)."""
        q = self.queries(self.check_task(request.task), request.widths)
        width = self.kernel_width
        sizes = torch.tensor([head.out_features for head in self.inr.outputs], device=q.layer.device)[q.layer]
        sizes = torch.where(q.is_bias[:, 0] > 0, torch.ones_like(sizes), sizes)
        return torch.arange(width, device=sizes.device)[None, :] < sizes[:, None]

    def fan_in_ratios(self, request: Request) -> list[float]:
        shapes = self.layout.shapes(request.widths, self.heads[request.task])
        full = self.layout.shapes(self.layout.widths, self.heads[request.task])
        return [f.fan_in / s.fan_in for s, f in zip(shapes, full)]

    def scale(self, raw: Weights, request: Request) -> Weights:
        """Raw outputs -> weights: per-layer scale, times full/actual fan-in for weights."""
        ratios = self.fan_in_ratios(request)
        return [(w * (self.w_scale[l] * ratios[l]), b * self.b_scale[l]) for l, (w, b) in enumerate(raw)]

    def unscale(self, weights: Weights) -> Weights:
        """Full-width weights -> the raw outputs that would produce them (reconstruction targets)."""
        return [(w / self.w_scale[l], b / self.b_scale[l]) for l, (w, b) in enumerate(weights)]

    @torch.no_grad()
    def calibrate(self, weights: Weights) -> None:
        """Set each layer's output scale to the spread of a trained full-width network's weights and
        biases (done once, on the first teacher), so that raw targets have unit scale everywhere:
        folded BatchNorm biases and 3x3 kernels differ by orders of magnitude."""
        for l, (w, b) in enumerate(weights):
            self.w_scale[l] = w.std().clamp_min(1e-6)
            self.b_scale[l] = b.std().clamp_min(1e-6) if b.numel() > 1 else b.abs().clamp_min(1e-6).mean()
        self.calibrated.fill_(True)

    def weights_many(self, requests: list[Request], generator: torch.Generator | None = None) -> list[Weights]:
        """Generate several networks with one pass of the INR over all their queries."""
        return [self.scale(raw, r) for raw, r in zip(self.raw_many(requests, generator), requests)]

    def weights(self, task: int, widths=None, noise: float = 0.0, samples: int = 1,
                generator: torch.Generator | None = None) -> Weights:
        """One network's weights; with ``samples`` > 1, the mean of that many jittered generations."""
        widths = tuple(widths) if widths is not None else self.layout.widths
        if samples <= 1:
            return self.weights_many([Request(task, widths, noise)], generator)[0]
        many = self.weights_many([Request(task, widths, noise)] * samples, generator)
        return [(torch.stack([m[l][0] for m in many]).mean(0), torch.stack([m[l][1] for m in many]).mean(0))
                for l in range(len(many[0]))]

    def module_for(self, task: int, widths) -> nn.Module:
        """A cached module of the target net whose own parameters ``functional_call`` replaces."""
        key = (tuple(widths), self.heads[task])
        if key not in self._modules_by_shape:
            self._modules_by_shape[key] = self.layout.build(widths, self.heads[task]).to(self.inr.stem.weight.device)
        return self._modules_by_shape[key]

    def run(self, weights: Weights, task: int, widths, x: torch.Tensor) -> torch.Tensor:
        """Forward ``x`` through the target net with generated ``weights`` (gradients reach the INR)."""
        return functional_call(self.module_for(task, widths), TargetLayout.state_dict(weights), (x,))

    @torch.no_grad()
    def generate(self, task: int, widths=None, *, fraction: float | None = None, budget: dict | None = None,
                 samples: int = 1, noise: float = 0.0) -> nn.Module:
        """An ordinary ``nn.Module`` for ``task`` (eval mode, no link to the generator).

        Give at most one of ``widths`` (one per hidden layer), ``fraction`` of the full width, or
        ``budget`` ({"params": n} and/or {"flops": n} per sample): the widest network that fits.
        ``samples`` > 1 averages that many generations with coordinate ``noise`` (NeuMeta's K).
        """
        task = self.check_task(task)
        if sum(v is not None for v in (widths, fraction, budget)) > 1:
            raise ConfigError("Give at most one of widths, fraction or budget.")
        if fraction is not None:
            if not 0 < fraction <= 1:
                raise ConfigError(f"fraction must be in (0, 1], got {fraction}.")
            widths = self.layout.at_fraction(fraction)
        elif budget is not None:
            widths = widths_for_budget(self.layout, self.heads[task], budget)
        widths = self.layout.check_widths(widths if widths is not None else self.layout.widths)
        net = self.layout.build(widths, self.heads[task]).to(self.inr.stem.weight.device)
        net.load_state_dict(TargetLayout.state_dict(self.weights(task, widths, noise if samples > 1 else 0.0, samples)))
        return net.eval()

    @torch.no_grad()
    def router(self, widths=None, *, fraction: float | None = None, budget: dict | None = None, samples: int = 1,
               noise: float = 0.0) -> TaskRouter:
        """Class-incremental deployment: every task's network behind a ``TaskRouter`` that infers
        each input's task (an ordinary module; with ``routing: router`` it holds the small task
        classifier, slimmable: ``hypernet.slimmable``).

        ``widths`` or ``fraction`` of the full width: every network, the classifier included, at
        that width. ``budget`` ({"params": n} and/or {"flops": n} per sample, over the whole
        deployment): the classifier as wide as leaves the task networks their narrowest trained
        width, then the task networks as wide as the rest allows (``hypernet.budget``)."""
        if not self.infers_task:
            raise ConfigError("router() needs a generator trained on a class-incremental stream; for a "
                              "task-incremental one, generate(task, ...) gives each task's network.")
        if not self.heads:
            raise ConfigError("This generator has no tasks yet; train it on at least one experience.")
        if sum(v is not None for v in (widths, fraction, budget)) > 1:
            raise ConfigError("Give at most one of widths, fraction or budget.")
        classifier_widths = None
        if budget is not None:
            classifier = self.routing == "router"
            classifier_widths, widths = split_for_budget(
                self.layout, self.heads, budget, min_width=self.arch.get("min_width"),
                classifier_min_width=self.arch.get("router_min_width"),
                classifier_classes=self.n_classes if classifier else None,
                classifier_batchnorm=classifier and has_batchnorm(self.task_classifier),
                classifier_pool=pool_size(self.task_classifier) if classifier else 1)
        elif fraction is not None:
            if not 0 < fraction <= 1:
                raise ConfigError(f"fraction must be in (0, 1], got {fraction}.")
            widths = self.layout.at_fraction(fraction)
        widths = self.layout.check_widths(widths if widths is not None else self.layout.widths)
        nets = [self.generate(k, widths, samples=samples, noise=noise) for k in range(len(self.heads))]
        router = None
        if self.routing == "router":
            router = self.classifier_at(classifier_widths or widths)
        return TaskRouter(nets, self.classes, self.n_classes, self.routing, router,
                          self.calibration_tensor() if self.routing == "calibrated" else None).eval()

    def classifier_at(self, widths) -> nn.Module:
        """The task classifier at ``widths``: an ordinary module, with that width's BatchNorm
        statistics and class offsets (measured for every uniformly scaled width after each experience)."""
        widths = self.layout.check_widths(widths)
        statistics = self.classifier_state.get(widths)
        if statistics is None and has_batchnorm(self.task_classifier):
            raise ConfigError(f"The task classifier has BatchNorm statistics for uniformly scaled widths only, not "
                              f"{list(widths)}; ask for a fraction= or a budget= instead.")
        return narrowed(self.layout, self.task_classifier, widths, statistics)

    def calibration_tensor(self) -> torch.Tensor:
        """One (scale, shift) row per task; (1, 0) for a task not calibrated yet."""
        rows = [*self.calibration, *[[1.0, 0.0]] * (len(self.heads) - len(self.calibration))]
        return torch.tensor(rows[: len(self.heads)], device=self.inr.stem.weight.device)


def task_classifier(layout: TargetLayout, n_classes: int, pool_size: int = 1) -> nn.Module:
    """The router's task classifier: a full-width network of the target family over all classes
    (with BatchNorm where the family has it), slimmable (``hypernet.slimmable``). Its weights are trained directly, not
    generated, so they take no gradient from the INR's optimizer. A CNN's head may read a ``pool_size`` grid of
    its last feature map rather than one average per channel: at 25% width one average of 16 channels is too few
    numbers to tell ten classes apart (README, "Class-incremental")."""
    return layout.build(layout.widths, n_classes, batchnorm=layout.batchnorm, pool_size=pool_size).requires_grad_(False)


def generator_state(generator: NeuMetaGenerator) -> dict:
    """Everything ``generator_from_state`` needs: the target family, the heads, the INR and its weights."""
    from dataclasses import asdict

    return {"layout": asdict(generator.layout), "heads": list(generator.heads), "arch": dict(generator.arch),
            "classes": generator.classes, "n_classes": generator.n_classes, "routing": generator.routing,
            "calibration": [list(map(float, row)) for row in generator.calibration],
            "task_classifier": generator.task_classifier is not None,
            "classifier_state": [[list(w), dict(s)] for w, s in generator.classifier_state.items()],
            "state_dict": generator.state_dict()}


def generator_from_state(saved: dict) -> NeuMetaGenerator:
    layout = saved["layout"]
    layout = TargetLayout(**{**layout, "input_shape": tuple(layout["input_shape"]), "widths": tuple(layout["widths"])})
    classes = saved.get("classes")
    generator = NeuMetaGenerator(layout, list(saved["heads"]), **saved["arch"],
                                 classes=None if classes is None else [list(c) for c in classes],
                                 n_classes=saved.get("n_classes"), routing=saved.get("routing") or "entropy")
    generator.calibration = [list(row) for row in saved.get("calibration", [])]
    if saved.get("task_classifier"):
        generator.task_classifier = task_classifier(layout, generator.n_classes, generator.arch["router_pool"])
        saved_state = saved.get("classifier_state", saved.get("classifier_statistics", []))  # the older name
        generator.classifier_state = {tuple(w): dict(s) for w, s in saved_state}
    generator.load_state_dict(saved["state_dict"])
    return generator


def save_generator(generator: NeuMetaGenerator, path) -> None:
    from neumeta_cl.tracking.atomic import save_atomic

    save_atomic(generator_state(generator), path)


def load_generator(path) -> NeuMetaGenerator:
    """A generator saved by a ``neumeta`` run (``runs/<run>/generator.pt``), ready to ``generate``."""
    from pathlib import Path

    if not Path(path).exists():
        raise ConfigError(f"No generator at {path}; a neumeta run saves one as runs/<run-name>/generator.pt.")
    return generator_from_state(torch.load(path, map_location="cpu", weights_only=True)).eval()
