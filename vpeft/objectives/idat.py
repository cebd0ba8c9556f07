"""iDAT: inverse distillation adapter tuning (Ruan et al., ICME 2024, arXiv:2403.15750), as JCruan519/iDAT does it.

A smaller model (default ViT-S/16) with its own head and, by default, the student's method is the *teacher* of the
large student; both train jointly from the start:

    L = CE(z_s, y) + CE(z_t, y) + alpha * D(z_s, z_t)

with ``D = mse`` on raw logits (the authors' script default, mean over B x C) or ``kl`` =
``KL(softmax(z_t / T) || softmax(z_s / T))`` (T = 5, batch mean, no T^2). Nothing is detached by default, so both
models learn from the distillation term. The authors step two optimizers after two backward passes through one graph;
vpeft does one backward and steps both parameter sets with the same optimizer settings, which is the same update.
Only the student is kept for inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Optional

import torch
import torch.nn.functional as F

from ..backbones import create_backbone
from ..engine.checkpoint import save_trainable
from ..errors import ConfigError
from ..memory import param_counts
from ..methods.base import apply_method
from ..registry import OBJECTIVES
from ..rundir import TEACHER_FILE
from .base import Objective, ObjectiveConfig
from .ce import CEConfig


@OBJECTIVES.register("idat")
@dataclass(kw_only=True)
class IDATConfig(ObjectiveConfig):
    """iDAT: a smaller teacher model trained jointly with the student; only the student is used at inference.

    The paper's six variants are presets (``vpeft list presets``): ``idat-s``, ``idat-p``, ``idat-ps`` (the
    sequential adapter after the block, AdaptFormer with scale 0.1, the parallel-shared adapter; hidden size 4), each
    with ``-mse`` or ``-kl``.

    Args:
        teacher: Teacher backbone spec (timm name with optional overrides), with its own head.
        teacher_checkpoint: Local weights of the teacher backbone (``.npz``, ``.safetensors``, ``.pth``); null:
            random weights (or hub weights with ``teacher_pretrained``).
        teacher_pretrained: Fetch the teacher's timm hub weights (needs network).
        teacher_method: Method spec of the teacher; null: the student's method with the same options.
        teacher_drop_path: Stochastic depth rate of the teacher's blocks; null: the run's ``train.drop_path``, as the
            official code builds the teacher with the task's drop-path (``train_onlinekd.py``).
        loss: Distillation term: ``mse`` on raw logits (the authors' script) or ``kl`` (teacher to student).
        alpha: Weight of the distillation term.
        temperature: Softmax temperature of ``kl``.
        detach_teacher: Stop the distillation gradient into the teacher (plain distillation; iDAT does not).
        save_teacher: Also write the teacher's trainable tensors to ``teacher.safetensors`` in the run directory.
    """

    teacher: str = "vit_small_patch16_224"
    teacher_checkpoint: Optional[str] = None
    teacher_pretrained: bool = False
    teacher_method: Optional[str] = None
    teacher_drop_path: Optional[float] = None
    loss: Literal["mse", "kl"] = "mse"
    alpha: float = 1.0
    temperature: float = 5.0
    detach_teacher: bool = False
    save_teacher: bool = False

    soft_labels: ClassVar[bool] = True  # both cross-entropies take class probabilities; teacher_acc their argmax

    def __post_init__(self):
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.teacher_drop_path is not None and not 0 <= self.teacher_drop_path < 1:
            raise ValueError(f"teacher_drop_path must be in [0, 1), got {self.teacher_drop_path}")

    def companion_runs(self, method) -> dict[str, tuple[str, object]]:
        return {"teacher": (self.teacher, self.teacher_method if self.teacher_method is not None else method)}

    def for_inference(self) -> ObjectiveConfig:
        return CEConfig()  # only the student predicts; no teacher is built

    def attach(self, backbone) -> IDATObjective:
        method = self.teacher_method if self.teacher_method is not None else backbone.method
        drop_path = (
            self.teacher_drop_path if self.teacher_drop_path is not None else getattr(backbone, "drop_path", 0.0)
        )
        teacher = create_backbone(
            self.teacher,
            backbone.num_classes,
            self.teacher_checkpoint,
            pretrained=self.teacher_pretrained,
            pool=backbone.pool if backbone.pool == "avg" and hasattr(backbone.model, "fc_norm") else None,
            drop_path=drop_path,
        )
        if teacher.input_size != backbone.input_size:
            raise ConfigError(
                f"objective 'idat': the teacher {self.teacher!r} takes {teacher.input_size} images but the student "
                f"takes {backbone.input_size}; give the teacher the student's img_size"
            )
        if teacher.num_classes != backbone.num_classes:
            raise ConfigError(
                f"objective 'idat': teacher has {teacher.num_classes} classes, student {backbone.num_classes}"
            )
        apply_method(teacher, method)
        return IDATObjective(self, teacher)


def distill_loss(z_s: torch.Tensor, z_t: torch.Tensor, cfg: IDATConfig) -> torch.Tensor:
    if cfg.detach_teacher:
        z_t = z_t.detach()
    if cfg.loss == "mse":
        return F.mse_loss(z_s, z_t)
    T = cfg.temperature
    lt, ls = F.log_softmax(z_t / T, -1), F.log_softmax(z_s / T, -1)
    return (lt.exp() * (lt - ls)).sum(-1).mean()  # KL(p_t || p_s), batch mean, no T^2


def idat_loss(z_s, z_t, labels, cfg: IDATConfig) -> dict[str, torch.Tensor]:
    parts = {
        "ce_student": F.cross_entropy(z_s, labels),
        "ce_teacher": F.cross_entropy(z_t, labels),
        "distill": distill_loss(z_s, z_t, cfg),
    }
    return {"loss": parts["ce_student"] + parts["ce_teacher"] + cfg.alpha * parts["distill"], **parts}


class IDATObjective(Objective):
    def __init__(self, cfg: IDATConfig, teacher):
        super().__init__()
        self.cfg = cfg
        self.teacher = teacher

    def forward(self, model, images, labels):
        z_s = model(images)
        z_t = self.teacher(images)
        out = idat_loss(z_s, z_t, labels, self.cfg)
        hard = labels.argmax(-1) if labels.ndim == 2 else labels  # soft targets (mixup): the dominant class
        correct_t = (z_t.detach().argmax(-1) == hard).float().mean() * 100
        parts = {k: v.detach() for k, v in out.items() if k != "loss"}
        return {"loss": out["loss"], "logits": z_s, **parts, "teacher_acc": correct_t}

    def companions(self) -> dict[str, torch.nn.Module]:
        return {"teacher": self.teacher}

    def extra_result(self, history: list[dict]) -> dict:
        t = param_counts(self.teacher)
        return {
            "teacher": {
                "backbone": self.cfg.teacher,
                "trainable_params": t["trainable"],
                "trainable_params_no_head": t["trainable_no_head"],
                "total_params": t["total"],
                "train_acc_last_epoch": history[-1].get("teacher_acc") if history else None,
            }
        }

    def save_extra(self, run_dir: Path) -> None:
        if self.cfg.save_teacher:
            save_trainable(Path(run_dir) / TEACHER_FILE, self.teacher, metadata={"teacher": self.cfg.teacher})
