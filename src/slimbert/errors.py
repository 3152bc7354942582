"""Exceptions that carry a message meant for the user (the CLI prints them without a traceback)."""


class SlimbertError(Exception):
    """Base class: anything slimbert raises on purpose about bad input."""


class CheckpointError(SlimbertError):
    """A checkpoint or config that cannot be read, or does not match the model."""


class DataError(SlimbertError):
    """A data file that cannot be read: names the file, and the line where there is one."""


class ConfigError(SlimbertError, ValueError):
    """An option with a value it cannot take: the message names the option and what it takes."""
