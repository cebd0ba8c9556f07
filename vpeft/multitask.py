"""Shared-trunk multi-task inference for DTL runs (DTL, arXiv:2312.07856, section "multi-task").

Several DTL models that share one frozen backbone differ only after block M: the blocks before it see the same
input for every task (nothing is injected there yet). :class:`MultiTask` runs them once for all tasks, keeps their
block inputs for each task's side maps, then runs each task's side network and tail blocks. Outputs equal running
every model alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .engine.checkpoint import TRAINABLE_FILE, read_trainable
from .errors import ConfigError
from .run import RESULT_FILE, build_model, read_run_config


class _Task(nn.Module):
    def __init__(self, name: str, side: nn.Module, head: nn.Linear):
        super().__init__()
        self.name, self.side, self.head = name, side, head


def _num_classes(run: Path, cfg) -> int:
    import json

    if cfg.data.num_classes:
        return cfg.data.num_classes
    return json.loads((run / RESULT_FILE).read_text())["num_classes"]


class MultiTask(nn.Module):
    """Evaluate several DTL runs over one shared frozen backbone.

    Args:
        runs: Run directories of ``dtl`` / ``dtl_plus`` runs with the same backbone (spec, checkpoint, pool, and the
            seed when the backbone has random weights) and the ``ce`` objective.
    """

    def __init__(self, runs: list[str | Path], device: str = "cpu"):
        super().__init__()
        if not runs:
            raise ConfigError("MultiTask needs at least one run directory")
        runs = [Path(r) for r in runs]
        cfgs = [read_run_config(r) for r in runs]
        ref = cfgs[0]
        for r, c in zip(runs, cfgs):
            if c.method.name not in ("dtl", "dtl_plus"):
                raise ConfigError(f"{r}: method {c.method.name!r}; shared-trunk inference needs dtl or dtl_plus runs")
            if c.objective.for_inference().changes_model:
                raise ConfigError(
                    f"{r}: objective {c.objective.name!r} changes the backbone; only runs whose model is "
                    "their method's alone share it"
                )
            if c.backbone.to_dict() != ref.backbone.to_dict() or c.method.pool != ref.method.pool:
                raise ConfigError(
                    f"{r} uses another backbone than {runs[0]} ({c.backbone.spec} vs {ref.backbone.spec})"
                )
            if ref.backbone.checkpoint is None and not ref.backbone.pretrained and c.train.seed != ref.train.seed:
                raise ConfigError(
                    f"{r}: its random-weight backbone comes from seed {c.train.seed}, not "
                    f"{ref.train.seed} as {runs[0]}'s; the frozen weights differ"
                )
        # The shared backbone: the first run's model without its method (same build path, so same frozen weights).
        plain = ref.from_dict({**ref.to_dict(), "method": "linear", "objective": "ce"})
        self.backbone, _ = build_model(plain, _num_classes(runs[0], ref))
        anatomy = self.backbone.anatomy
        if anatomy.token_sequence() is None:
            raise ConfigError(
                f"shared-trunk inference supports ViT-like backbones (one token sequence); "
                f"{anatomy.name}: {anatomy.reason('token_sequence')}"
            )
        self.backbone.set_pool(ref.method.pool)
        self.tasks = nn.ModuleList()
        for r, c in zip(runs, cfgs):
            sd = read_trainable(r / TRAINABLE_FILE)
            side = c.method.build_side(self.backbone)
            side.load_state_dict(
                {k.removeprefix("extras.dtl."): v for k, v in sd.items() if k.startswith("extras.dtl.")}
            )
            w = sd["model.head.weight"]
            head = nn.Linear(w.shape[1], w.shape[0])
            head.load_state_dict({"weight": w, "bias": sd["model.head.bias"]})
            self.tasks.append(_Task(r.name, side, head))
        self.first = min(t.side.first for t in self.tasks)
        self.to(device).eval()

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every task, in the order of the runs."""
        anatomy = self.backbone.anatomy
        blocks = anatomy.blocks
        x = anatomy.embed(images)
        inputs = []
        for i in range(self.first):  # the shared trunk: once for all tasks
            inputs.append(x)
            x = blocks[i](x)
        outs = []
        for task in self.tasks:
            side = task.side
            h = None
            for i, xi in enumerate(inputs):
                h = side.map(i, xi) if h is None else h + side.map(i, xi)
            y = x
            for i in range(self.first, len(blocks)):
                h = side.map(i, y) if h is None else h + side.map(i, y)
                y = blocks[i](y)
                if i >= side.first:
                    y = y + side.activation(h)
            feats = anatomy.head_input(y)
            outs.append(task.head(feats))
        return outs
