"""The continual loop: plugins, Trainer.fit per experience, an accuracy-matrix row after each."""

from neumeta_cl.runner.evaluation import accuracy, accuracy_row
from neumeta_cl.runner.loop import ContinualRunner, RunOutcome
from neumeta_cl.runner.signals import RunInterrupted

__all__ = ["accuracy", "accuracy_row", "ContinualRunner", "RunOutcome", "RunInterrupted"]
