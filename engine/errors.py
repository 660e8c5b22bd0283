"""The two ways a trial can fail, so every entry point can map them to an exit status, and the
one way an error becomes one line of a message."""


class ConfigError(ValueError):
    """Bad input, found before anything runs. One line naming the bad value and the allowed ones.

    Entry points turn it into exit status 2, never a traceback.
    """


class TrainingError(RuntimeError):
    """A failure during training (e.g. a non-finite loss), naming the task and step.

    Entry points turn it into exit status 1; no result.json is written.
    """


def one_line(err: BaseException | str, limit: int = 300) -> str:
    """An error as one short line, to embed in a message: "Type: text", whitespace collapsed."""
    text = " ".join(str(err).split())
    if isinstance(err, BaseException):
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
