"""The two ways a trial can fail, so every entry point can map them to an exit status."""


class ConfigError(ValueError):
    """Bad input, found before anything runs. One line naming the bad value and the allowed ones.

    Entry points turn it into exit status 2, never a traceback.
    """


class TrainingError(RuntimeError):
    """A failure during training (e.g. a non-finite loss), naming the task and step.

    Entry points turn it into exit status 1; no result.json is written.
    """
