"""Fine-tuning (the lower bound) and joint training on everything seen so far (the upper bound)."""

from __future__ import annotations

from neumeta_cl.data import TensorExperience, concat_experiences
from neumeta_cl.strategies.base import ContinualModule


class Naive(ContinualModule):
    """Plain fine-tuning on each new experience: no protection against forgetting."""


class Joint(ContinualModule):
    """Joint training: at experience i, train on the union of experiences 0..i.

    The final row of R is a model trained on all the data, the usual upper bound; the earlier rows
    are the offline upper bound at each point of the stream, so BWT/FWT stay defined.
    """

    def train_data(self, stream, index: int) -> TensorExperience:
        union = concat_experiences(stream.train[: index + 1])
        union.index = index
        return union
