"""Runs: build a model from a run config, read a run directory back, evaluate."""

from __future__ import annotations

import shlex
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import torch

from .backbones import create_backbone
from .config import RunConfig
from .data.loader import DeviceData, StreamedData, batch_len
from .data.sources import data_class_names
from .engine.checkpoint import load_trainable_state
from .errors import RunDirError
from .methods.base import apply_method

# The run folder's file names lived here: importable from here still.
from .rundir import CONFIG_FILE, LOG_FILE, RESULT_FILE, STATE_FILE, TRAINABLE_FILE, RunDir  # noqa: F401
from .tasks.base import Metric, Task
from .tasks.classify import ClassifyConfig


def build_model(cfg: RunConfig, num_classes: int, inference: bool = False, class_names: Optional[list[str]] = None):
    """Backbone (seeded by ``train.seed``) + method + objective. Same config and seed, same initial model.

    With ``inference``, the objective is the one evaluation needs (``ObjectiveConfig.for_inference``: no teacher).
    ``class_names``: the data's, for a task that binds them to the model (``clip_classify``) before the method.
    """
    torch.manual_seed(cfg.train.seed)
    backbone = create_backbone(
        cfg.backbone.spec,
        num_classes,
        cfg.backbone.checkpoint,
        pretrained=cfg.backbone.pretrained,
        pool=cfg.backbone.pool,
        drop_path=cfg.train.drop_path,
        head_init=cfg.backbone.head_init,
    )
    backbone.drop_path = cfg.train.drop_path  # what an objective's own models (iDAT's teacher) take by default
    cfg.task.configure_model(backbone, class_names)
    apply_method(backbone, cfg.method)
    objective = (cfg.objective.for_inference() if inference else cfg.objective).attach(backbone)
    return backbone, objective


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def amp_context(device: torch.device, amp: str = "none"):
    """The run's autocast on CUDA (``fp16`` or ``bf16``); a no-op elsewhere and for ``none``."""
    if amp == "none" or torch.device(device).type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


@torch.no_grad()
def evaluate_task(
    model, objective, ds, task: Task, batch_size: int, device=None, amp: str = "none", shard: tuple[int, int] = (0, 1)
) -> Metric:
    """The task's metric state over a split: batches prepared by ``task`` (no augmentation), predicted by the
    objective, counted on the device.

    ``ds`` is a decoded split, a :class:`~vpeft.data.loader.DeviceData` already on the device or a
    :class:`~vpeft.data.loader.StreamedData` (decoded a chunk at a time); the forward runs under
    the run's autocast (``amp``). With ``shard=(rank, world)`` only this process's share of every batch is evaluated
    and the state is its own: :meth:`~vpeft.tasks.base.Metric.sync` combines the processes' states.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    data = ds if isinstance(ds, (DeviceData, StreamedData)) else DeviceData(ds, device, resident=False)
    was_training = model.training
    model.eval(), objective.eval()
    metric = task.metric()
    with amp_context(device, amp):
        for batch, _ in data.mappings(batch_size, shard=shard):
            if batch_len(batch):
                batch = task.prepare(batch, train=False)
                with task.model_context(batch):
                    outputs = objective.predict(model, batch["image"])
                metric.update(outputs, batch)
    model.train(was_training), objective.train(was_training)
    return metric


def evaluate(
    model, objective, ds, batch_size: int, norm: str, device=None, amp: str = "none", shard: tuple[int, int] = (0, 1)
) -> tuple[float, int, int]:
    """Top-1 accuracy in percent, with the number correct and the total: :func:`evaluate_task` with the ``classify``
    task, images normalised by ``norm``.

    Predictions are counted on the device and read once (one host copy per split). With ``shard=(rank, world)`` the
    counts are this process's own (the trainer sums them over the processes).
    """
    metric = evaluate_task(model, objective, ds, ClassifyConfig().build(norm), batch_size, device, amp, shard)
    correct = int(metric.correct)
    return 100.0 * correct / max(metric.total, 1), correct, metric.total


def read_run_config(run_dir: str | Path) -> RunConfig:
    return RunConfig.from_dict(RunDir(run_dir).read_config())


def load_run(run_dir: str | Path, device: str = "cpu"):
    """Rebuild the trained model of a run directory: ``(model, objective, config, num_classes)`` (``num_classes``: the
    head's size, which the task fixes or the run recorded)."""
    run = RunDir(run_dir)
    cfg = RunConfig.from_dict(run.read_config())
    if run.has(RESULT_FILE) and not run.has(TRAINABLE_FILE):  # finished, so --resume would only say so
        raise RunDirError(
            f"{run_dir} has no {TRAINABLE_FILE} although the run finished ({RESULT_FILE} is there): its "
            f"trained weights were deleted or moved. Put the file back, or train the run again with "
            f"'vpeft train --config {shlex.quote(str(run / CONFIG_FILE))} --out {shlex.quote(str(run_dir))} "
            "--overwrite'"
        )
    trainable = run.read_trainable()
    num_classes = cfg.task.outputs or cfg.data.num_classes
    if num_classes is None:
        num_classes = (run.read_result() or {}).get(cfg.task.head_key)
    if num_classes is None:
        raise RunDirError(f"{run_dir}: cannot tell the number of classes (no data.num_classes, no {RESULT_FILE})")
    names = None
    if cfg.task.needs_class_names:  # what the run trained with, else its data's
        names = (run.read_result() or {}).get("class_names") or data_class_names(cfg.data, num_classes)
    model, objective = build_model(cfg, num_classes, inference=True, class_names=names)
    if cfg.selector is not None:  # the selection is recorded in the checkpoint itself
        cfg.selector.apply(model, cfg.selector.state_from_checkpoint(model, dict(trainable)))
    load_trainable_state(model, None, trainable, source=str(run / TRAINABLE_FILE))
    model.to(device), objective.to(device)
    model.eval(), objective.eval()
    return model, objective, cfg, num_classes
