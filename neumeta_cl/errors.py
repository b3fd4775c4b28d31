"""Errors a user can cause and fix. The CLI prints their message as one sentence and exits 2."""


class UserError(Exception):
    """Bad input: an unknown name or key, a missing dataset, an impossible request."""

    exit_code = 2


class ConfigError(UserError):
    """A config value or key is invalid."""


class DataError(UserError):
    """A dataset is missing or a stream cannot be built from it."""


class TrainingDiverged(Exception):
    """The loss became NaN or infinite; the run stops and records why."""

    exit_code = 1


class RunInterrupted(Exception):
    """SIGTERM or SIGINT stopped the run; the exit code is 128 + the signal number (143, 130)."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        self.signal = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {self.signal}")
