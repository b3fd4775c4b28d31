"""Experience-level hooks of the continual loop (where morphs and metric loggers plug in)."""

from __future__ import annotations


class ExperienceHook:
    """Called by ``ContinualRunner`` around every experience. Override only what you need.

    ``on_experience_start`` runs before the strategy sees the experience: a morph replaces or
    edits ``runner.module.net`` here, and the next ``Trainer.fit`` builds a fresh optimizer.
    """

    def on_run_start(self, runner) -> None:
        pass

    def on_experience_start(self, runner, index: int) -> None:
        pass

    def trainer_callbacks(self, runner, index: int) -> list:
        """Lightning callbacks to add to this experience's ``Trainer`` (e.g. probes during training)."""
        return []

    def on_experience_end(self, runner, index: int) -> None:
        pass

    def on_run_end(self, runner) -> None:
        pass
