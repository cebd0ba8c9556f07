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


class DivergedError(VpeftError, RuntimeError):
    """Training whose loss became NaN or infinite (most often: the learning rate is too high)."""


def describe_mismatch(missing: list[str], unexpected: list[str], mismatched: list[str]) -> str:
    """``missing: a, b (2); shape mismatch: c (1)``: what differs between a state dict and a model."""
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            parts.append(f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''} ({len(items)})")
    return "; ".join(parts)
