"""Benchmark harness: experiments as files, local and Ray executors, resumable sweeps, paper-style reports."""

from .experiment import Experiment, RunSpec, expand, list_recipes, load_experiment, load_recipe
from .report import collect, write_report
from .runner import LocalExecutor, RayExecutor, run_one, run_state, run_sweep

__all__ = [
    "Experiment",
    "RunSpec",
    "expand",
    "list_recipes",
    "load_experiment",
    "load_recipe",
    "collect",
    "write_report",
    "LocalExecutor",
    "RayExecutor",
    "run_one",
    "run_state",
    "run_sweep",
]
