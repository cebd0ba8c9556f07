"""Runs: build a model from a run config, read a run directory back, evaluate."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from .backbones import create_backbone
from .config import RunConfig
from .data.loader import DeviceData
from .data.vtab import normalize
from .engine.checkpoint import load_trainable_state
from .errors import RunDirError
from .methods.base import apply_method
# The run folder's file names lived here: importable from here still.
from .rundir import CONFIG_FILE, LOG_FILE, RESULT_FILE, STATE_FILE, TRAINABLE_FILE, RunDir  # noqa: F401


def build_model(cfg: RunConfig, num_classes: int, inference: bool = False):
    """Backbone (seeded by ``train.seed``) + method + objective. Same config and seed, same initial model.

    With ``inference``, the objective is the one evaluation needs (``ObjectiveConfig.for_inference``: no teacher).
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
    apply_method(backbone, cfg.method)
    objective = (cfg.objective.for_inference() if inference else cfg.objective).build(backbone)
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
def evaluate(model, objective, ds, batch_size: int, norm: str, device=None, amp: str = "none",
             shard: tuple[int, int] = (0, 1)) -> tuple[float, int, int]:
    """Top-1 accuracy in percent, with the number correct and the total.

    ``ds`` is a decoded split or a :class:`~vpeft.data.loader.DeviceData` already on the device. Predictions are
    counted on the device and read once (one host copy per split), under the run's autocast (``amp``). With
    ``shard=(rank, world)`` only this process's share of every batch is evaluated and the counts are its own (the
    trainer sums them over the processes).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    data = ds if isinstance(ds, DeviceData) else DeviceData(ds, device, resident=False)
    was_training = model.training
    model.eval(), objective.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    total = 0
    with amp_context(device, amp):
        for x, y, _ in data.batches(batch_size, shard=shard):
            if len(y):
                logits = objective.predict(model, normalize(x, norm))
                correct += (logits.argmax(-1) == y).sum()
                total += len(y)
    model.train(was_training), objective.train(was_training)
    correct = int(correct)
    return 100.0 * correct / max(total, 1), correct, total


def read_run_config(run_dir: str | Path) -> RunConfig:
    return RunConfig.from_dict(RunDir(run_dir).read_config())


def load_run(run_dir: str | Path, device: str = "cpu"):
    """Rebuild the trained model of a run directory: ``(model, objective, config, num_classes)``."""
    run = RunDir(run_dir)
    cfg = RunConfig.from_dict(run.read_config())
    trainable = run.read_trainable()
    num_classes = cfg.data.num_classes
    if num_classes is None:
        num_classes = (run.read_result() or {}).get("num_classes")
    if num_classes is None:
        raise RunDirError(f"{run_dir}: cannot tell the number of classes (no data.num_classes, no {RESULT_FILE})")
    model, objective = build_model(cfg, num_classes, inference=True)
    if cfg.selector is not None:  # the selection is recorded in the checkpoint itself
        cfg.selector.apply(model, cfg.selector.state_from_checkpoint(model, dict(trainable)))
    load_trainable_state(model, None, trainable, source=str(run / TRAINABLE_FILE))
    model.to(device), objective.to(device)
    model.eval(), objective.eval()
    return model, objective, cfg, num_classes
