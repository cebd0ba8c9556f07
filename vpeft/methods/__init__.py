"""Tuning methods. Importing this package registers every built-in method in :data:`vpeft.registry.METHODS`."""

from . import adapter, basic, clip_prompts, dtl, fact, lora, ssf, vpt  # noqa: F401  (each module registers its methods)
from .base import MethodConfig, apply_method, count_params, freeze, head_param_names, methods_for
from .merge import merge

__all__ = ["merge", "MethodConfig", "apply_method", "count_params", "freeze", "head_param_names", "methods_for"]
