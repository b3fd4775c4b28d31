"""Real datasets as normalised tensors, loaded once and cached (in-process and as a .pt on disk).

Three datasets, all available offline:
  fmnist   Fashion-MNIST, 60k/10k 28x28 images (Debian `dataset-fashion-mnist`, a folder, or a download)
  digits   scikit-learn's 8x8 digits, 1797 images, split 80/20 stratified with seed 0
  mnist1d  MNIST-1D, 4000/1000 signals of length 40, built procedurally by `mnist1d.data.make_dataset`

Each is normalised with one mean/std computed on its train split (a single channel each).
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from neumeta_cl.errors import DataError
from neumeta_cl.registry import Registry

CACHE_VERSION = 1  # bump when the tensors a loader produces change, so stale .pt files are ignored
DEBIAN_FMNIST = "/usr/share/datasets/fashion-mnist"
FMNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class DatasetTensors:
    name: str
    x_train: torch.Tensor  # float32, normalised, [N, C, H, W] (images) or [N, 1, L] (MNIST-1D)
    y_train: torch.Tensor  # int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    mean: float = 0.0  # train statistics used to normalise (in the loader's raw units)
    std: float = 1.0

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    @property
    def blank(self) -> float:
        """Normalised value of a raw 0 (an empty pixel): what rotations fill uncovered corners with."""
        return -self.mean / self.std


DATASETS: Registry[Callable[[str | None, bool], dict]] = Registry("dataset")
_MEMO: dict[str, DatasetTensors] = {}


def cache_dir() -> Path:
    """Where .pt caches and decompressed raw files live: $NEUMETA_CL_CACHE or ~/.cache/neumeta_cl."""
    return Path(os.environ.get("NEUMETA_CL_CACHE") or Path.home() / ".cache" / "neumeta_cl")


def load_dataset(name: str, root: str | None = None, download: bool = False) -> DatasetTensors:
    """Normalised train/test tensors of a registered dataset.

    Memoised in-process; otherwise read from `<cache_dir>/<name>-v<N>.pt`; otherwise built by the
    dataset's loader (which may use `root`/`download`) and written there. Once cached, `root` and
    `download` are not consulted: the tensors are the same whichever folder they came from.
    """
    loader = DATASETS.get(name)  # ConfigError listing valid names
    if name in _MEMO:
        return _MEMO[name]
    path = cache_dir() / f"{name}-v{CACHE_VERSION}.pt"
    if path.exists():
        fields = torch.load(path, weights_only=True)
    else:
        fields = _normalise(loader(root, download))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(fields, tmp)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    _MEMO[name] = DatasetTensors(name=name, **fields)
    return _MEMO[name]


def clear_caches() -> None:
    """Forget in-process copies (the .pt files stay); tests use it to force a load from disk."""
    _MEMO.clear()


load_dataset.cache_clear = clear_caches  # functools.lru_cache-style spelling


def _normalise(raw: dict) -> dict:
    """raw: x_train/x_test float arrays, y_train/y_test ints, n_classes -> normalised tensor fields."""
    x_train = torch.as_tensor(raw["x_train"], dtype=torch.float32)
    x_test = torch.as_tensor(raw["x_test"], dtype=torch.float32)
    # float64 statistics: a float32 sum over 47M pixels loses digits
    mean = x_train.double().mean().item()
    std = x_train.double().std().item()
    return dict(
        x_train=((x_train - mean) / std).contiguous(),
        y_train=torch.as_tensor(raw["y_train"], dtype=torch.int64),
        x_test=((x_test - mean) / std).contiguous(),
        y_test=torch.as_tensor(raw["y_test"], dtype=torch.int64),
        n_classes=int(raw["n_classes"]),
        mean=mean,
        std=std,
    )


# --- digits -------------------------------------------------------------------------------------


@DATASETS.register("digits")
def _digits(root: str | None, download: bool) -> dict:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images[:, None].astype(np.float32)  # [1797, 1, 8, 8], values 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        x, d.target, test_size=0.2, stratify=d.target, random_state=0
    )
    return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, n_classes=10)


# --- MNIST-1D -----------------------------------------------------------------------------------


@DATASETS.register("mnist1d")
def _mnist1d(root: str | None, download: bool) -> dict:
    import mnist1d.data

    # make_dataset seeds the global `random`/numpy generators (seed 42); keep the caller's streams intact.
    # (get_dataset would try to download a pickle first; make_dataset never touches the network.)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return dict(
        x_train=d["x"][:, None],  # [4000, 1, 40]
        y_train=d["y"],
        x_test=d["x_test"][:, None],
        y_test=d["y_test"],
        n_classes=10,
    )


# --- Fashion-MNIST ------------------------------------------------------------------------------


@DATASETS.register("fmnist")
def _fmnist(root: str | None, download: bool) -> dict:
    from torchvision import datasets

    tv_root = fmnist_root(root, download)
    train = datasets.FashionMNIST(tv_root, train=True, download=False)
    test = datasets.FashionMNIST(tv_root, train=False, download=False)
    return dict(
        x_train=train.data[:, None].float() / 255.0,
        y_train=train.targets,
        x_test=test.data[:, None].float() / 255.0,
        y_test=test.targets,
        n_classes=10,
    )


def fmnist_root(root: str | None = None, download: bool = False) -> str:
    """A folder torchvision's FashionMNIST reads (it holds FashionMNIST/raw/<uncompressed IDX files>).

    Searched in order: `root` (IDX files directly in it, gzipped or not, or torchvision's layout),
    torchvision's layout under the cache dir, the Debian package folder ($NEUMETA_CL_DEBIAN_FMNIST
    overrides it), then a torchvision download into the cache dir when `download` is true.
    Files that are gzipped or outside torchvision's layout are decompressed/copied into the cache once.
    """
    cache = cache_dir()
    debian = Path(os.environ.get("NEUMETA_CL_DEBIAN_FMNIST") or DEBIAN_FMNIST)
    candidates = []
    if root:
        candidates += [Path(root) / "FashionMNIST" / "raw", Path(root)]
    candidates += [cache / "FashionMNIST" / "raw", debian]

    for folder in candidates:
        files = _idx_files(folder)
        if files is None:
            continue
        if all(f.suffix != ".gz" for f in files) and folder.name == "raw" and folder.parent.name == "FashionMNIST":
            return str(folder.parent.parent)  # already torchvision's layout
        _install_raw(files, cache / "FashionMNIST" / "raw")
        return str(cache)

    if download:
        from torchvision import datasets

        try:
            datasets.FashionMNIST(str(cache), train=True, download=True)  # fetches train and test files
        except Exception as e:  # torchvision's message spans several lines; ours is one sentence
            raise DataError(
                f"Downloading Fashion-MNIST into {cache} failed ({type(e).__name__}); check the network, or install "
                "it with `sudo apt-get install dataset-fashion-mnist` and set benchmark.download=false."
            ) from e
        return str(cache)

    looked = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"Fashion-MNIST was not found (looked in: {looked}); install it with "
        "`sudo apt-get install dataset-fashion-mnist`, set benchmark.root=<folder holding the IDX files>, "
        "or allow a download with benchmark.download=true."
    )


def _idx_files(folder: Path) -> list[Path] | None:
    """The four IDX files in `folder` (each uncompressed if present, else .gz), or None if any is missing."""
    found = []
    for stem in FMNIST_FILES:
        plain, gz = folder / stem, folder / f"{stem}.gz"
        if plain.is_file():
            found.append(plain)
        elif gz.is_file():
            found.append(gz)
        else:
            return None
    return found


def _install_raw(files: list[Path], raw: Path) -> None:
    """Write uncompressed copies of the IDX files into `raw` (atomically, so concurrent runs are safe)."""
    raw.mkdir(parents=True, exist_ok=True)
    for src in files:
        dst = raw / src.name.removesuffix(".gz")
        if dst.resolve() == src.resolve():
            continue
        tmp = dst.with_name(f"{dst.name}.tmp{os.getpid()}")
        with (gzip.open(src) if src.suffix == ".gz" else open(src, "rb")) as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(tmp, dst)
