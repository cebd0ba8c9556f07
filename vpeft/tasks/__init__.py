"""Tasks: what a run predicts and how it is scored. Importing this package registers the built-in ones in
:data:`vpeft.registry.TASKS`; a new task is one module here plus its line below, or a third-party module declared in
the entry-point group ``vpeft.tasks``."""

from . import classify, clip_classify, regress, segment, text  # noqa: F401  (each module registers its task)
from .base import Metric, Task, TaskConfig

__all__ = ["Metric", "Task", "TaskConfig"]
