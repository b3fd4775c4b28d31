"""Data layer: real datasets as cached tensors -> Avalanche streams materialised to tensors -> batches."""

from neumeta_cl.data import datasets as _datasets
from neumeta_cl.data import streams as _streams
from neumeta_cl.data.datamodule import (
    EpochBatchSampler,
    ExperienceDataModule,
    TensorBatches,
    concat_experiences,
    make_loader,
)
from neumeta_cl.data.datasets import DATASETS, DatasetTensors, cache_dir, load_dataset
from neumeta_cl.data.streams import SCENARIOS, STREAM_KINDS, TensorExperience, TensorStream, build_stream


def clear_caches() -> None:
    """Forget memoised datasets and streams (the .pt files on disk stay)."""
    _datasets.clear_caches()
    _streams.clear_caches()


__all__ = [
    "DATASETS",
    "DatasetTensors",
    "EpochBatchSampler",
    "ExperienceDataModule",
    "SCENARIOS",
    "STREAM_KINDS",
    "TensorBatches",
    "TensorExperience",
    "TensorStream",
    "build_stream",
    "cache_dir",
    "clear_caches",
    "concat_experiences",
    "load_dataset",
    "make_loader",
]
