"""The project's error types. The command line prints any ``ResnetsError`` as one line, without a traceback."""


class ResnetsError(Exception):
    """A problem with the user's input (a file, a name, a setting), explained in one line."""


class CheckpointError(ResnetsError):
    """A checkpoint that cannot be read, is unsafe, or does not fit the model."""


class DataError(ResnetsError, ValueError):
    """A dataset that is missing, empty or malformed."""


class ConfigError(ResnetsError, ValueError):
    """A setting out of range, or an unknown model or recipe name."""
