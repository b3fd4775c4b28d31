"""The continual loop: hooks, Trainer.fit per experience, an accuracy-matrix row after each."""

from neumeta_cl.runner.evaluation import accuracy, accuracy_row
from neumeta_cl.runner.hooks import ExperienceHook
from neumeta_cl.runner.loop import ContinualRunner, RunOutcome

__all__ = ["accuracy", "accuracy_row", "ExperienceHook", "ContinualRunner", "RunOutcome"]
