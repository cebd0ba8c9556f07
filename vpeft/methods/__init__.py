"""Tuning methods. Importing this package registers every built-in method in :data:`vpeft.registry.METHODS`."""

from .base import MethodConfig, apply_method, count_params, freeze, head_param_names
from . import basic  # noqa: F401  (registers linear, full, bitfit)

__all__ = ["MethodConfig", "apply_method", "count_params", "freeze", "head_param_names"]
