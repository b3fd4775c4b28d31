"""Data layer on real data: cached datasets, Avalanche streams materialised to tensors, batches.

The central check: every materialised experience equals what iterating Avalanche's own
experience dataset yields (`exp.dataset[i] == (x, y, t)`), for every stream kind and scenario.
"""

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from neumeta_cl.data import (
    DATASETS,
    ExperienceDataModule,
    TensorExperience,
    build_stream,
    clear_caches,
    concat_experiences,
    load_dataset,
    make_loader,
)
from neumeta_cl.data.datasets import FMNIST_FILES, fmnist_root
from neumeta_cl.data.transforms import Permute, Rotate, draw_angles, draw_permutations
from neumeta_cl.errors import ConfigError, DataError

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_debian_fmnist = pytest.mark.skipif(
    not (DEBIAN_FMNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST not installed: sudo apt-get install dataset-fashion-mnist",
)


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Every test here starts from an empty cache dir and empty in-process memos."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEUMETA_CL_CACHE", str(cache))
        mp.delenv("NEUMETA_CL_DEBIAN_FMNIST", raising=False)
        clear_caches()
        yield
    clear_caches()
    shutil.rmtree(cache, ignore_errors=True)  # ~270 MB of Fashion-MNIST copies


def assert_matches_avalanche(tensor_exps, avalanche_stream, n_checks=12):
    """Materialised (x, y, t) == Avalanche's per-sample (x, y, t) at spread-out positions."""
    avalanche_exps = list(avalanche_stream)
    assert len(avalanche_exps) == len(tensor_exps)
    for ours, theirs in zip(tensor_exps, avalanche_exps):
        assert ours.index == theirs.current_experience
        assert ours.task_label == theirs.task_label
        assert ours.classes == sorted(theirs.classes_in_this_experience)
        assert len(ours.y) == len(theirs.dataset)
        assert ours.x.dtype == torch.float32 and ours.y.dtype == ours.t.dtype == torch.int64
        for i in np.linspace(0, len(ours.y) - 1, n_checks).astype(int).tolist():
            x, y, t = theirs.dataset[i]
            assert torch.equal(ours.x[i], x), (ours.index, i)
            assert ours.y[i].item() == int(y) and ours.t[i].item() == int(t), (ours.index, i)
        assert set(ours.y.unique().tolist()) == set(ours.classes)
        assert (ours.t == ours.task_label).all()


# --- datasets -----------------------------------------------------------------------------------


def test_digits_shapes_split_and_normalisation():
    d = load_dataset("digits")
    assert d.x_train.shape == (1437, 1, 8, 8) and d.x_test.shape == (360, 1, 8, 8)
    assert d.input_shape == (1, 8, 8) and d.n_classes == 10
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert abs(d.x_train.mean().item()) < 1e-5 and abs(d.x_train.std().item() - 1) < 1e-4
    # stratified 80/20: every class keeps ~20% of its samples in test
    counts_train, counts_test = d.y_train.bincount(), d.y_test.bincount()
    assert ((counts_test / (counts_train + counts_test) - 0.2).abs() < 0.01).all()
    # a raw 0 pixel maps to the blank value
    assert d.x_train.min().item() == pytest.approx(d.blank, abs=1e-6)


def test_mnist1d_is_built_offline_and_leaves_global_rngs_alone():
    random.seed(123)
    np.random.seed(123)
    expected = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    d = load_dataset("mnist1d")
    assert (random.random(), np.random.rand()) == expected  # make_dataset seeds them; we restore
    assert d.x_train.shape == (4000, 1, 40) and d.x_test.shape == (1000, 1, 40)
    assert d.input_shape == (1, 40) and d.n_classes == 10
    assert abs(d.x_train.mean().item()) < 1e-5 and abs(d.x_train.std().item() - 1) < 1e-4
    assert sorted(d.y_train.unique().tolist()) == list(range(10))


def test_second_load_reads_the_pt_cache(monkeypatch):
    first = load_dataset("digits")
    assert load_dataset("digits") is first  # memoised in-process
    assert (Path(os.environ["NEUMETA_CL_CACHE"]) / "digits-v1.pt").is_file()

    def must_not_rebuild(root, download):
        raise AssertionError("the loader ran although the .pt cache exists")

    monkeypatch.setitem(DATASETS._entries, "digits", must_not_rebuild)
    clear_caches()
    again = load_dataset("digits")
    assert again is not first
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(again, field), getattr(first, field))
    assert (again.mean, again.std, again.n_classes) == (first.mean, first.std, first.n_classes)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ConfigError, match="digits, fmnist, mnist1d"):
        load_dataset("cifar100")


@needs_debian_fmnist
def test_fmnist_loads_from_the_debian_package():
    cache = Path(os.environ["NEUMETA_CL_CACHE"])
    clear_caches()
    d = load_dataset("fmnist")
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.y_train.bincount().tolist() == [6000] * 10 and d.y_test.bincount().tolist() == [1000] * 10
    assert abs(d.x_train.mean().item()) < 1e-4 and abs(d.x_train.std().item() - 1) < 1e-3
    assert 0.28 < d.mean < 0.29  # the well-known Fashion-MNIST pixel mean (in [0, 1] units)
    # decompressed once into torchvision's layout under the cache dir, plus the tensor cache
    assert all((cache / "FashionMNIST" / "raw" / f).is_file() for f in FMNIST_FILES)
    assert (cache / "fmnist-v1.pt").is_file()


@needs_debian_fmnist
def test_fmnist_root_accepts_a_folder_of_idx_files_and_torchvision_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUMETA_CL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NEUMETA_CL_DEBIAN_FMNIST", str(tmp_path / "nowhere"))
    # gzipped IDX files directly in the folder -> decompressed into <cache>/FashionMNIST/raw
    assert fmnist_root(root=str(DEBIAN_FMNIST)) == str(tmp_path / "cache")
    raw = tmp_path / "cache" / "FashionMNIST" / "raw"
    assert (raw / "train-images-idx3-ubyte").stat().st_size == 28 * 28 * 60000 + 16
    # a torchvision layout is used where it is, nothing copied
    monkeypatch.setenv("NEUMETA_CL_CACHE", str(tmp_path / "cache2"))
    assert fmnist_root(root=str(tmp_path / "cache")) == str(tmp_path / "cache")
    assert not (tmp_path / "cache2").exists()


def test_missing_fmnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUMETA_CL_DEBIAN_FMNIST", str(tmp_path / "empty"))
    monkeypatch.setenv("NEUMETA_CL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    clear_caches()
    try:
        with pytest.raises(DataError) as err:
            load_dataset("fmnist", root=None, download=False)
    finally:
        clear_caches()
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "benchmark.root=" in message and "benchmark.download=true" in message
    assert str(tmp_path / "empty") in message and "\n" not in message


# --- split streams ------------------------------------------------------------------------------


def test_split_class_incremental_equals_avalanche():
    s = build_stream("digits", "split", 5, seed=3)
    assert (s.name, s.kind, s.scenario, s.n_experiences) == ("split_digits", "split", "class", 5)
    assert s.heads is None and s.n_classes == 10 and s.input_shape == (1, 8, 8)
    assert sorted(s.class_order) == list(range(10))
    assert_matches_avalanche(s.train, s.benchmark.train_stream)
    assert_matches_avalanche(s.test, s.benchmark.test_stream)
    digits = load_dataset("digits")
    for k, (train, test) in enumerate(zip(s.train, s.test)):
        # class-IL keeps original labels; each experience holds all samples of its two classes
        assert train.classes == sorted(s.class_order[2 * k : 2 * k + 2])
        assert len(train.y) == sum((digits.y_train == c).sum().item() for c in train.classes)
        assert len(test.y) == sum((digits.y_test == c).sum().item() for c in test.classes)
    assert sum(len(e.y) for e in s.train) == len(digits.y_train)


def test_split_task_incremental_equals_avalanche_with_labels_remapped_per_experience():
    s = build_stream("digits", "split", 5, seed=3, scenario="task")
    assert s.scenario == "task" and s.heads == [2] * 5 and s.n_classes == 2
    assert_matches_avalanche(s.train, s.benchmark.train_stream)
    assert_matches_avalanche(s.test, s.benchmark.test_stream)
    class_il = build_stream("digits", "split", 5, seed=3)
    assert s.class_order == class_il.class_order  # same seed, same class order
    for k, (task_exp, class_exp) in enumerate(zip(s.train, class_il.train)):
        assert task_exp.task_label == k and task_exp.classes == [0, 1]
        # label = position of the original class in this experience's slice of the class order
        position = {c: i for i, c in enumerate(s.class_order[2 * k : 2 * k + 2])}
        assert torch.equal(task_exp.x, class_exp.x)
        assert task_exp.y.tolist() == [position[c] for c in class_exp.y.tolist()]


def test_class_order_follows_the_seed():
    a = build_stream("digits", "split", 5, seed=0).class_order
    clear_caches()
    assert build_stream("digits", "split", 5, seed=0).class_order == a  # cold rebuild, same order
    orders = {tuple(build_stream("digits", "split", 5, seed=s).class_order) for s in range(4)}
    assert len(orders) == 4
    fixed = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    s = build_stream("digits", "split", 2, seed=0, fixed_class_order=fixed)
    assert s.class_order == fixed and [e.classes for e in s.train] == [[5, 6, 7, 8, 9], [0, 1, 2, 3, 4]]


def test_building_a_stream_leaves_torchs_global_rng_alone():
    clear_caches()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    build_stream("digits", "split", 5, seed=11)  # nc_benchmark calls torch.manual_seed(seed) inside
    assert torch.equal(torch.rand(3), expected)


def test_streams_are_memoised():
    a = build_stream("digits", "split", 5, seed=0)
    assert build_stream("digits", "split", 5, seed=0) is a
    assert build_stream("digits", "split", 5, seed=1) is not a
    clear_caches()
    assert build_stream("digits", "split", 5, seed=0) is not a


def test_uneven_split_is_a_data_error_naming_valid_counts():
    with pytest.raises(DataError) as err:
        build_stream("digits", "split", 3, seed=0)
    assert str(err.value) == (
        "Cannot split the 10 classes of digits into 3 experiences; choose n_experiences among 1, 2, 5, 10."
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dataset="digits", kind="shuffled"), "valid stream kinds are: permuted, rotated, split"),
        (dict(dataset="svhn", kind="split"), "valid datasets are: digits, fmnist, mnist1d"),
        (dict(dataset="digits", kind="split", scenario="domain"), "valid scenarios are: class, task"),
        (dict(dataset="digits", kind="permuted", scenario="class"), "valid scenarios are: domain, task"),
        (dict(dataset="digits", kind="split", fixed_class_order=[0, 0, 1]), "distinct class ids"),
        (dict(dataset="digits", kind="rotated", rotations=[10.0]), "one angle per experience"),
        (dict(dataset="digits", kind="permuted", rotations=[10.0] * 5), "only apply to rotated"),
    ],
)
def test_bad_stream_requests_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_stream(n_experiences=5, seed=0, **kwargs)


# --- permuted / rotated streams -----------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["domain", "task"])
def test_permuted_equals_avalanche(scenario):
    s = build_stream("digits", "permuted", 4, seed=5, scenario=scenario)
    assert s.kind == "permuted" and s.scenario == scenario and s.n_classes == 10 and s.class_order is None
    assert s.heads == ([10] * 4 if scenario == "task" else None)
    assert [e.task_label for e in s.train] == ([0, 1, 2, 3] if scenario == "task" else [0] * 4)
    assert_matches_avalanche(s.train, s.benchmark.train_stream)
    assert_matches_avalanche(s.test, s.benchmark.test_stream)
    digits = load_dataset("digits")
    perms = draw_permutations(5, 64, 4)  # Avalanche's PermutedMNIST convention: RandomState(seed)
    for e, perm in zip(s.train, perms):
        assert torch.equal(e.y, digits.y_train) and e.classes == list(range(10))
        assert torch.equal(e.x.flatten(1), digits.x_train.flatten(1)[:, perm])
    assert not torch.equal(perms[0], torch.arange(64))  # the first experience is permuted too
    assert all(not torch.equal(perms[i], perms[j]) for i in range(4) for j in range(i))


def test_permutation_works_on_mnist1d_signals():
    s = build_stream("mnist1d", "permuted", 2, seed=0)
    assert_matches_avalanche(s.train, s.benchmark.train_stream)
    d = load_dataset("mnist1d")
    perm = draw_permutations(0, 40, 2)[1]
    assert torch.equal(s.test[1].x, d.x_test[:, :, perm])


@pytest.mark.parametrize("scenario", ["domain", "task"])
def test_rotated_equals_avalanche(scenario):
    s = build_stream("digits", "rotated", 3, seed=2, scenario=scenario)
    assert s.kind == "rotated" and s.scenario == scenario
    assert_matches_avalanche(s.train, s.benchmark.train_stream)
    assert_matches_avalanche(s.test, s.benchmark.test_stream)
    # the batched rotation equals torchvision's per-image rotate, corners filled with the blank value
    digits = load_dataset("digits")
    for e, angle in zip(s.train, draw_angles(2, 3)):
        expected = torch.stack(
            [TF.rotate(img, angle, InterpolationMode.NEAREST, fill=[digits.blank]) for img in digits.x_train]
        )
        assert torch.equal(e.x, expected)


def test_rotations_can_be_given_and_rotate_real_images():
    s = build_stream("digits", "rotated", 2, seed=0, rotations=[0.0, 90.0])
    digits = load_dataset("digits")
    assert torch.equal(s.train[0].x, digits.x_train)  # 0 degrees: unchanged
    assert torch.allclose(s.train[1].x, torch.rot90(digits.x_train, 1, dims=(2, 3)), atol=1e-6)


def test_rotation_of_mnist1d_is_a_circular_shift():
    s = build_stream("mnist1d", "rotated", 2, seed=0, rotations=[90.0, -36.0])
    assert_matches_avalanche(s.train, s.benchmark.train_stream)
    d = load_dataset("mnist1d")
    assert torch.equal(s.train[0].x, torch.roll(d.x_train, 10, dims=-1))  # 90/360 * 40 = 10
    assert torch.equal(s.test[1].x, torch.roll(d.x_test, -4, dims=-1))


def test_batched_transforms_equal_per_sample_ones():
    x = torch.randn(6, 3, 5, 7)
    perm = torch.randperm(3 * 5 * 7)
    permute = Permute(perm, (3, 5, 7))
    assert torch.equal(permute(x), torch.stack([permute(xi) for xi in x]))
    rotate = Rotate(-37.0, (3, 5, 7), fill=-2.5)
    assert torch.equal(rotate(x), torch.stack([rotate.reference(xi) for xi in x]))
    assert (rotate(x) == -2.5).any()  # corners were uncovered


@needs_debian_fmnist
def test_split_fmnist_sizes_and_avalanche_equality():
    s = build_stream("fmnist", "split", 5, seed=0)
    assert [len(e.y) for e in s.train] == [12000] * 5 and [len(e.y) for e in s.test] == [2000] * 5
    assert s.input_shape == (1, 28, 28)
    assert_matches_avalanche(s.train, s.benchmark.train_stream, n_checks=4)


# --- batches ------------------------------------------------------------------------------------


def _experience(n=1000):
    x = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x[:, 0, 0, 0] = torch.arange(n)  # each input carries its row number
    return TensorExperience(index=0, x=x, y=torch.arange(n) % 10, t=torch.arange(n) % 3,
                            task_label=0, classes=list(range(10)))


def _epoch_order(loader, exp):
    """Rows of `exp` in the order one pass over `loader` yields them (checking x, y, t stay together)."""
    rows = []
    for x, y, t in loader:
        rows.append(x[:, 0, 0, 0].long())
        assert torch.equal(exp.x[rows[-1]], x) and torch.equal(exp.y[rows[-1]], y) and torch.equal(exp.t[rows[-1]], t)
    return torch.cat(rows)


def test_loader_yields_every_sample_once_per_epoch_reproducibly():
    exp = _experience()
    loader = make_loader(exp, batch_size=64, seed=3)
    assert isinstance(loader, torch.utils.data.DataLoader) and len(loader) == 16
    e0, e1 = _epoch_order(loader, exp), _epoch_order(loader, exp)
    assert sorted(e0.tolist()) == list(range(1000)) == sorted(e1.tolist())
    assert not torch.equal(e0, e1)  # a new order every epoch
    again = make_loader(exp, batch_size=64, seed=3)
    assert torch.equal(_epoch_order(again, exp), e0) and torch.equal(_epoch_order(again, exp), e1)
    assert not torch.equal(_epoch_order(make_loader(exp, batch_size=64, seed=4), exp), e0)
    # Lightning sets the epoch explicitly: same permutation as the implicit count
    again.sampler.set_epoch(1)
    assert torch.equal(_epoch_order(again, exp), e1)


def test_loader_drop_last_and_no_shuffle():
    exp = _experience(100)
    loader = make_loader(exp, batch_size=32, seed=0, shuffle=False, drop_last=True)
    sizes = [len(y) for _, y, _ in loader]
    assert len(loader) == 3 and sizes == [32, 32, 32]
    assert torch.equal(torch.cat([y for _, y, _ in loader]), exp.y[:96])
    assert [len(y) for _, y, _ in make_loader(exp, batch_size=32)] == [32, 32, 32, 4]


def test_datamodule_trains_with_lightning():
    import pytorch_lightning as pl

    s = build_stream("digits", "split", 5, seed=0, scenario="task")
    epochs_seen = []

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(64, 2)

        def training_step(self, batch, i):
            x, y, t = batch
            assert (t == 1).all()
            return torch.nn.functional.cross_entropy(self.net(x.flatten(1)), y)

        def on_train_epoch_start(self):
            epochs_seen.append(self.trainer.train_dataloader.sampler.epoch)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = ExperienceDataModule(s.train[1], batch_size=32, seed=0)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(Tiny(), datamodule=dm)
    assert trainer.num_training_batches == -(-len(s.train[1].y) // 32)
    assert trainer.global_step == 2 * trainer.num_training_batches
    assert epochs_seen == [0, 1]  # Lightning called set_epoch


def test_concat_experiences_is_the_union():
    s = build_stream("digits", "split", 5, seed=0, scenario="task")
    union = concat_experiences(s.train[:3])
    assert len(union.y) == sum(len(e.y) for e in s.train[:3])
    assert torch.equal(union.x[: len(s.train[0].y)], s.train[0].x)
    assert union.t.unique().tolist() == [0, 1, 2] and union.task_label == -1 and union.index == 2
    assert union.classes == [0, 1]
    dm = ExperienceDataModule(s.train[:3], batch_size=50, seed=0)
    assert sum(len(y) for _, y, _ in dm.train_dataloader()) == len(union.y)


def test_avalanche_strategies_run_on_the_same_benchmark():
    from avalanche.training.supervised import Naive

    for kind in ("split", "permuted"):
        s = build_stream("digits", kind, 5, seed=0)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        strategy = Naive(model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                         train_mb_size=64, train_epochs=1, eval_mb_size=256, device="cpu", evaluator=None)
        exp = s.benchmark.train_stream[0]
        strategy.train(exp)
        assert strategy.clock.train_exp_iterations == -(-len(s.train[0].y) // 64)
