"""Exceptions that vpeft raises for bad input. The CLI prints them as one clear line, without a traceback."""


class VpeftError(Exception):
    """Base class of every error caused by user input (a config, a file, a checkpoint)."""


class ConfigError(VpeftError, ValueError):
    """An unknown or invalid config key or value."""


class DataError(VpeftError):
    """A list file, image or label that cannot be used."""


class CheckpointError(VpeftError):
    """A weight file that is missing, unreadable or does not match the model."""


class RunDirError(VpeftError):
    """A run directory that is missing, incomplete, or would be overwritten."""
