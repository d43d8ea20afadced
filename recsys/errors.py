"""User-facing errors: the CLI prints their message on one line and exits with code 2, no traceback."""


class RecsysError(Exception):
    """Base for errors caused by input or configuration, not by a bug."""


class DataError(RecsysError):
    """A file or data set that cannot be used; the message names the file and the cause."""


class ModelError(RecsysError):
    """Training failed for a reason the user can act on (e.g. NaN loss at epoch E, step S)."""


class TrackingError(RecsysError):
    """The tracking server or store cannot be used."""


class ConfigError(RecsysError, ValueError):
    """A config that cannot be used, with a message fit for the terminal."""
