"""Mini-batches of tensor experiences for Lightning, built by tensor indexing (no per-sample collate).

A DataLoader with `batch_size=None` hands each item of its sampler straight to the dataset, so
our sampler yields whole index batches (slices of one `randperm`) and the dataset returns
`(x[idx], y[idx], t[idx])`. That keeps a real `DataLoader` (Lightning counts batches and shows
progress) that runs as fast as a hand-written loop over tensors.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from neumeta_cl.data.streams import TensorExperience


class TensorBatches(Dataset):
    """`ds[idx]` with a tensor of indices returns the batch (x[idx], y[idx], t[idx])."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor):
        self.x, self.y, self.t = x, y, t

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: torch.Tensor):
        # index_select: ~3x faster than x[idx] advanced indexing for batch gathers on CPU
        return self.x.index_select(0, idx), self.y.index_select(0, idx), self.t.index_select(0, idx)


class EpochBatchSampler(Sampler):
    """Index batches of a fresh permutation every epoch.

    The permutation of epoch e depends only on (seed, e): reproducible, different between epochs.
    Lightning tells the sampler the epoch through `set_epoch`; a plain loop gets 0, 1, 2, ...
    """

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        if self.shuffle:
            # SeedSequence mixes (seed, epoch) so that no two pairs share a stream (seed + epoch would).
            entropy = [self.seed & 0xFFFF_FFFF_FFFF_FFFF, epoch]  # SeedSequence wants non-negative ints
            mixed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(mixed))
        else:
            order = torch.arange(self.n)
        batches = order.split(self.batch_size)
        return iter(batches[: len(self)])


def make_loader(
    exp: TensorExperience, batch_size: int, seed: int = 0, shuffle: bool = True, drop_last: bool = False
) -> DataLoader:
    """A DataLoader of (x, y, t) batches over one experience, in the main process."""
    sampler = EpochBatchSampler(len(exp.y), batch_size, seed, shuffle, drop_last)
    # num_workers=0: batches are a tensor index away; worker processes would only add IPC copies.
    return DataLoader(TensorBatches(exp.x, exp.y, exp.t), batch_size=None, sampler=sampler, num_workers=0)


def concat_experiences(exps: list[TensorExperience]) -> TensorExperience:
    """The union of experiences (joint training). Samples keep their own task labels in `t`;
    `index` is the last experience's, `task_label` the shared one or -1 when they differ."""
    if not exps:
        raise ValueError("concat_experiences needs at least one experience")
    task_labels = {e.task_label for e in exps}
    return TensorExperience(
        index=exps[-1].index,
        x=torch.cat([e.x for e in exps]),
        y=torch.cat([e.y for e in exps]),
        t=torch.cat([e.t for e in exps]),
        task_label=task_labels.pop() if len(task_labels) == 1 else -1,
        classes=sorted({c for e in exps for c in e.classes}),
    )


class ExperienceDataModule(pl.LightningDataModule):
    """Training batches of one experience (or the union of several) for `Trainer.fit`."""

    def __init__(
        self,
        experiences: TensorExperience | list[TensorExperience],
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        drop_last: bool = False,
    ):
        super().__init__()
        if isinstance(experiences, (list, tuple)):
            experiences = experiences[0] if len(experiences) == 1 else concat_experiences(list(experiences))
        self.experience = experiences
        self.batch_size, self.seed, self.shuffle, self.drop_last = batch_size, seed, shuffle, drop_last

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.experience, self.batch_size, self.seed, self.shuffle, self.drop_last)
