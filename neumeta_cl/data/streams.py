"""Task streams defined by Avalanche, materialised to tensors once.

Avalanche decides everything that defines a stream: class order, which samples go to which
experience, label remapping, task labels. We then read each experience's sample indices (a
`sample_idx` data attribute we attach to the base dataset), gather inputs and labels with one
tensor index, apply Avalanche's label mapping (`class_mapping`) and the experience's
permutation/rotation as batched ops. Iterating Avalanche datasets sample by sample would cost
~300 us per sample; this costs ~1 us. Tests check the result equals `exp.dataset[i]` exactly.

  split     nc_benchmark over the dataset: class-incremental ("class", original labels, one head)
            or task-incremental ("task", labels 0..k-1 in each experience, task label = index).
  permuted  one fixed feature permutation per experience (as Avalanche's PermutedMNIST).
  rotated   one fixed rotation per experience (as Avalanche's RotatedMNIST); MNIST-1D: circular shift.
            Both are domain-incremental ("domain", task label 0, one head) or "task".

Avalanche is imported inside the functions that use it: it takes 5-8 s to import, which users of
`load_dataset` alone should not pay.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

from neumeta_cl.data.datasets import DATASETS, DatasetTensors, load_dataset
from neumeta_cl.data.transforms import Permute, Rotate, draw_angles, draw_permutations
from neumeta_cl.errors import ConfigError, DataError
from neumeta_cl.registry import Registry

# Valid scenarios per kind; the first is the default.
SCENARIOS = {"split": ("class", "task"), "permuted": ("domain", "task"), "rotated": ("domain", "task")}
_MEMO_SIZE = 4  # permuted Fashion-MNIST with 10 experiences holds ~2 GB: keep only a few streams
_MEMO: OrderedDict[tuple, "TensorStream"] = OrderedDict()


@dataclass
class TensorExperience:
    index: int  # position in the stream
    x: torch.Tensor  # float32
    y: torch.Tensor  # int64, the labels the model must predict
    t: torch.Tensor  # int64 task label per sample
    task_label: int
    classes: list[int]  # classes (in the label space of y) present in this experience

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class TensorStream:
    """A materialised stream. Streams are memoised and shared: treat them as read-only."""

    name: str  # e.g. "split_fmnist"
    kind: str  # "split" | "permuted" | "rotated"
    scenario: str  # "class" | "task" | "domain"
    train: list[TensorExperience]
    test: list[TensorExperience]
    n_classes: int  # distinct labels y takes across the stream: output units of a single head
    heads: list[int] | None  # task-incremental: classes per task head; None for a single head
    input_shape: tuple
    class_order: list[int] | None  # Avalanche's class order, original class ids (split only)
    benchmark: object  # the Avalanche benchmark, to run Avalanche strategies on the same experiences

    @property
    def n_experiences(self) -> int:
        return len(self.train)


class Built(NamedTuple):
    """What a stream kind returns: Avalanche's benchmark plus what we need to materialise it."""

    benchmark: object
    transforms: list[Callable | None]  # per experience: batched equivalent of Avalanche's input transform
    label_map: torch.Tensor | None  # y = label_map[original class] (Avalanche's remapping); None: identity
    class_order: list[int] | None


# A stream kind: (data, n_experiences, seed, scenario, fixed_class_order=, rotations=) -> Built
STREAM_KINDS: Registry[Callable[..., Built]] = Registry("stream kind")


def build_stream(
    dataset: str,
    kind: str,
    n_experiences: int,
    seed: int,
    scenario: str | None = None,
    root: str | None = None,
    download: bool = False,
    fixed_class_order: list[int] | None = None,
    rotations: list[float] | None = None,
    train_per_experience: int | None = None,
) -> TensorStream:
    """Build (or fetch from the in-process memo) a materialised Avalanche stream."""
    make = STREAM_KINDS.get(kind)
    DATASETS.get(dataset)  # unknown names fail before any loading
    scenario = scenario or SCENARIOS[kind][0]
    if scenario not in SCENARIOS[kind]:
        raise ConfigError(
            f"Scenario '{scenario}' is not available for {kind} streams; valid scenarios are: "
            f"{', '.join(SCENARIOS[kind])}."
        )
    if not isinstance(n_experiences, int) or n_experiences < 1:
        raise ConfigError(f"n_experiences must be a positive integer; got {n_experiences!r}.")
    if fixed_class_order is not None and kind != "split":
        raise ConfigError(f"fixed_class_order only applies to split streams, not to {kind} streams; remove it.")
    if rotations is not None and kind != "rotated":
        raise ConfigError(f"rotations only apply to rotated streams, not to {kind} streams; remove them.")
    if train_per_experience is not None and (isinstance(train_per_experience, bool) or not isinstance(train_per_experience, int)
                                             or train_per_experience < 1):
        raise ConfigError(f"train_per_experience must be a positive integer or null, got {train_per_experience!r}.")

    key = (
        dataset, kind, n_experiences, seed, scenario,
        None if fixed_class_order is None else tuple(fixed_class_order),
        None if rotations is None else tuple(float(r) for r in rotations),
        train_per_experience,
    )  # root/download only say where the data comes from, not what it is
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]

    data = load_dataset(dataset, root=root, download=download)
    # nc_benchmark reseeds torch's global generator; keep the caller's random stream untouched so
    # a memoised (warm) build and a cold build leave the same RNG state behind.
    with torch.random.fork_rng(devices=[]):
        built = make(data, n_experiences, seed, scenario, fixed_class_order=fixed_class_order, rotations=rotations)
    bm, tfs, label_map = built.benchmark, built.transforms, built.label_map
    # train_per_experience: each experience trains on its own uniform random subset (seeded), as
    # MC-SGD's and GEM's Rotated-MNIST subsample every task; tests keep every sample.
    keep = [None if train_per_experience is None else _subset(len(e.dataset), train_per_experience, seed, i)
            for i, e in enumerate(bm.train_stream)]
    train = [_materialise(e, data.x_train, data.y_train, tf, label_map, k) for e, tf, k in zip(bm.train_stream, tfs, keep)]
    test = [_materialise(e, data.x_test, data.y_test, tf, label_map) for e, tf in zip(bm.test_stream, tfs)]

    task = scenario == "task"
    stream = TensorStream(
        name=f"{kind}_{dataset}",
        kind=kind,
        scenario=scenario,
        train=train,
        test=test,
        n_classes=1 + max(max(e.classes) for e in train),
        heads=[len(e.classes) for e in train] if task else None,
        input_shape=data.input_shape,
        class_order=built.class_order,
        benchmark=bm,
    )
    _MEMO[key] = stream
    if len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    return stream


def subsample_test(stream: TensorStream, test_per_experience: int | None, seed: int) -> TensorStream:
    """The stream with at most ``n`` test samples per experience, drawn without replacement.

    Experience ``i`` draws with its own generator (``seed``, ``i``). Training subsets are drawn
    before materialising (``build_stream(train_per_experience=...)``); the Avalanche benchmark
    is left whole.
    """
    if test_per_experience is None:
        return stream
    test = []
    for e in stream.test:
        if len(e) <= test_per_experience:
            test.append(e)
            continue
        g = torch.Generator().manual_seed(seed * 1_000_003 + 7919 + e.index)
        keep = torch.randperm(len(e), generator=g)[:test_per_experience].sort().values
        test.append(TensorExperience(e.index, e.x[keep], e.y[keep], e.t[keep], e.task_label, e.classes))
    return TensorStream(stream.name, stream.kind, stream.scenario, stream.train, test, stream.n_classes, stream.heads,
                        stream.input_shape, stream.class_order, stream.benchmark)


def clear_caches() -> None:
    """Forget memoised streams."""
    _MEMO.clear()


build_stream.cache_clear = clear_caches


def _subset(n: int, k: int, seed: int, index: int) -> torch.Tensor:
    """k of n positions, uniformly at random without replacement, fixed by (seed, experience index)."""
    if k > n:
        raise ConfigError(f"train_per_experience is {k}, but experience {index} has only {n} training samples; lower it.")
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + index)
    return torch.randperm(n, generator=g)[:k].sort().values


def _materialise(exp, x_base, y_base, transform, label_map, keep: torch.Tensor | None = None) -> TensorExperience:
    """Tensors of one Avalanche experience, in Avalanche's sample order, without per-sample access
    (only the positions ``keep`` of it, if given)."""
    # Rows of the base tensors this experience holds: a data-attribute read (~1 us a sample),
    # not exp.dataset[i], which would load, transform and collate every sample.
    rows = torch.tensor(list(exp.dataset.sample_idx), dtype=torch.int64)
    if keep is not None:
        rows = rows[keep]
    if transform is None:
        x = x_base[rows]
    elif torch.equal(rows, torch.arange(len(x_base))):
        x = transform(x_base)  # permuted/rotated hold every row in order: skip a full copy
    else:
        x = transform(x_base[rows])
    y = y_base[rows] if label_map is None else label_map[y_base[rows]]
    return TensorExperience(
        index=exp.current_experience,
        x=x,
        y=y,
        t=torch.full((len(rows),), exp.task_label, dtype=torch.int64),
        task_label=exp.task_label,
        classes=sorted(int(c) for c in exp.classes_in_this_experience),
    )


def _avalanche_dataset(x: torch.Tensor, y: torch.Tensor, task_label: int = 0, transform: Callable | None = None):
    """An Avalanche classification dataset over (x, y) that remembers each sample's row in x.

    Samples are (x, y, task_label). A `transform` is frozen, as in PermutedMNIST: Avalanche applies
    it in train and eval mode alike and no strategy can replace it.
    """
    from avalanche.benchmarks.utils import (
        ConstantSequence,
        DataAttribute,
        DefaultTransformGroups,
        TaskAwareSupervisedClassificationDataset,
        TaskLabels,
    )

    return TaskAwareSupervisedClassificationDataset(
        [torch.utils.data.TensorDataset(x, y)],
        data_attributes=[
            DataAttribute(y, "targets"),
            TaskLabels(ConstantSequence(task_label, len(y))),
            DataAttribute(torch.arange(len(y)), "sample_idx"),
        ],
        frozen_transform_groups=None if transform is None else DefaultTransformGroups((transform, None)),
    )


# --- stream kinds -------------------------------------------------------------------------------


@STREAM_KINDS.register("split")
def split(data: DatasetTensors, n_experiences, seed, scenario, fixed_class_order=None, rotations=None):
    """Avalanche's classic nc_benchmark: the classes, shuffled by `seed`, cut into equal groups."""
    from avalanche.benchmarks import nc_benchmark

    classes = list(range(data.n_classes)) if fixed_class_order is None else list(fixed_class_order)
    if len(set(classes)) != len(classes) or not all(0 <= int(c) < data.n_classes for c in classes):
        raise ConfigError(
            f"fixed_class_order must list distinct class ids of {data.name} in 0..{data.n_classes - 1}; "
            f"got {list(fixed_class_order)}."
        )
    n = len(classes)
    if n % n_experiences:
        divisors = ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)
        raise DataError(
            f"Cannot split the {n} classes of {data.name} into {n_experiences} experiences; "
            f"choose n_experiences among {divisors}."
        )
    task = scenario == "task"
    benchmark = nc_benchmark(
        _avalanche_dataset(data.x_train, data.y_train),
        _avalanche_dataset(data.x_test, data.y_test),
        n_experiences,
        task_labels=task,
        seed=seed,
        fixed_class_order=None if fixed_class_order is None else [int(c) for c in fixed_class_order],
        class_ids_from_zero_in_each_exp=task,
    )
    # NCScenario.class_mapping: mapped id = class_mapping[original id] (identity for class-IL,
    # position within the experience's classes for task-IL).
    label_map = torch.tensor(benchmark.class_mapping, dtype=torch.int64)
    return Built(benchmark, [None] * n_experiences, label_map, list(benchmark.classes_order_original_ids))


@STREAM_KINDS.register("permuted")
def permuted(data: DatasetTensors, n_experiences, seed, scenario, fixed_class_order=None, rotations=None):
    """Each experience permutes all C*H*W (or C*L) input features with its own fixed permutation."""
    from avalanche.benchmarks.classic.cmnist import PixelsPermutation

    perms = draw_permutations(seed, math.prod(data.input_shape), n_experiences)
    # Avalanche's own PixelsPermutation in its datasets; our batched Permute must agree (tested).
    avl = [PixelsPermutation(p) for p in perms]
    batched = [Permute(p, data.input_shape) for p in perms]
    return Built(_one_dataset_per_experience(data, avl, scenario), batched, None, None)


@STREAM_KINDS.register("rotated")
def rotated(data: DatasetTensors, n_experiences, seed, scenario, fixed_class_order=None, rotations=None):
    """Each experience rotates every input by its own fixed angle (MNIST-1D: circular shift, see Rotate)."""
    if rotations is not None and len(rotations) != n_experiences:
        raise ConfigError(
            f"rotations lists {len(rotations)} angles for {n_experiences} experiences; give one angle per experience."
        )
    angles = list(rotations) if rotations is not None else draw_angles(seed, n_experiences)
    rot = [Rotate(a, data.input_shape, fill=data.blank) for a in angles]
    return Built(_one_dataset_per_experience(data, [r.reference for r in rot], scenario), rot, None, None)


def _one_dataset_per_experience(data: DatasetTensors, transforms: list[Callable], scenario: str):
    """One transformed copy of the data per experience, as PermutedMNIST/RotatedMNIST build it.

    We use Avalanche's `benchmark_from_datasets` rather than PermutedMNIST's
    `nc_benchmark(..., one_dataset_per_exp=True)`: same experiences, labels and task labels, but
    nc_benchmark walks every sample's label through nested lazy indices (~6 s for 5 x 60k samples
    versus ~0.3 s). Experiences get Avalanche's classes timeline and task-label attributes.
    """
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels

    tasks = range(len(transforms)) if scenario == "task" else [0] * len(transforms)
    benchmark = benchmark_from_datasets(
        train=[_avalanche_dataset(data.x_train, data.y_train, t, tf) for t, tf in zip(tasks, transforms)],
        test=[_avalanche_dataset(data.x_test, data.y_test, t, tf) for t, tf in zip(tasks, transforms)],
    )
    return with_task_labels(with_classes_timeline(benchmark))
