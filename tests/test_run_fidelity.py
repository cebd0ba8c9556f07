"""Where a run follows the authors' code (issue 15): the iDAT teacher's drop-path, the dropped last batch, and a kill at
any write of the run directory."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from vpeft.config import RunConfig
from vpeft.engine import checkpoint
from vpeft.engine.trainer import train
from vpeft.run import build_model

SMALL = "vit_tiny_patch16_224:img_size=16,patch_size=8,embed_dim=16,depth=2,num_heads=2"
TEACHER = "vit_tiny_patch16_224:img_size=16,patch_size=8,embed_dim=8,depth=2,num_heads=1"


def cfg_for(root, method="bitfit", objective="ce", selector=None, **train_opts):
    t = {"epochs": 2, "batch_size": 8, "lr": 1e-2, "device": "cpu", **train_opts}
    return RunConfig.from_dict(
        {
            "backbone": {"spec": SMALL},
            "method": method,
            "objective": objective,
            "selector": selector,
            "data": {"root": str(root)},
            "train": t,
        }
    )


def _drop_rates(backbone) -> list[float]:
    return [float(getattr(b.drop_path1, "drop_prob", 0.0)) for b in backbone.blocks]


@pytest.mark.parametrize("teacher_drop_path,expected", [(None, 0.1), (0.0, 0.0), (0.2, 0.2)])
def test_the_idat_teacher_takes_the_runs_drop_path(small_task, teacher_drop_path, expected):
    """iDAT's train_onlinekd.py builds model_t with the task's drop_path_rate: so does vpeft unless told otherwise."""
    objective = {"name": "idat", "teacher": TEACHER, "teacher_drop_path": teacher_drop_path}
    model, obj = build_model(cfg_for(small_task, "adapter:dim=2", objective, drop_path=0.1), 3)
    assert _drop_rates(model) == pytest.approx([0.0, 0.1])  # timm's linear rule over the depth
    assert _drop_rates(obj.teacher) == pytest.approx([0.0, expected])
    # in training the teacher's output is stochastic exactly when its drop-path is on
    obj.teacher.train()
    x = torch.randn(4, 3, 16, 16)
    differ = not torch.equal(obj.teacher(x), obj.teacher(x))
    assert differ == (expected > 0)


def test_drop_last_takes_whole_batches_only(small_task, tmp_path, monkeypatch):
    # 36 training images (train800val200 of small_task), batch 10: 3 steps an epoch with drop_last, 4 without
    steps = []
    real_step = torch.optim.AdamW.step

    def counting(self, *a, **kw):
        steps.append(1)
        return real_step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.AdamW, "step", counting)
    for drop, expected in ((False, 4), (True, 3)):
        steps.clear()
        r = train(cfg_for(small_task, batch_size=10, drop_last=drop, epochs=1), tmp_path / str(drop), progress=False)
        assert len(steps) == expected and r["protocol"]["drop_last"] is drop
    with pytest.raises(Exception, match="leaves no batch"):
        train(cfg_for(small_task, batch_size=64, drop_last=True, epochs=1), tmp_path / "none", progress=False)


class Killed(BaseException):
    pass


def _count_writes(monkeypatch, run):
    n = [0]
    real = checkpoint.os.replace

    def counting(a, b):
        n[0] += 1
        return real(a, b)

    monkeypatch.setattr(checkpoint.os, "replace", counting)
    run()
    monkeypatch.setattr(checkpoint.os, "replace", real)
    return n[0]


def test_a_kill_at_any_write_of_the_run_directory_resumes_to_the_same_result(small_task, tmp_path, monkeypatch):
    """Every file of a run is written through one atomic writer; a kill at the k-th write (leaving the temporary file,
    as a SIGKILL does) is resumed by --resume to exactly the uninterrupted result, for every k."""
    cfg = cfg_for(small_task, method="linear", selector="gps:k=1", optimizer="adam", weight_decay=0.0, epochs=2)
    ref_dir = tmp_path / "ref"
    writes = _count_writes(monkeypatch, lambda: train(cfg, ref_dir, progress=False))
    ref = json.loads((ref_dir / "result.json").read_text())
    ref_w = load_file(str(ref_dir / "trainable.safetensors"))
    assert writes == 8  # selection + its record, config, state and log of epoch 1, log of epoch 2, trainable, result
    real = checkpoint.os.replace
    for k in range(writes):
        out, calls = tmp_path / f"k{k}", [0]

        def killing(a, b):
            calls[0] += 1
            if calls[0] == k + 1:  # killed mid-write: the temporary file stays, the target is untouched
                raise Killed()
            return real(a, b)

        monkeypatch.setattr(checkpoint.os, "replace", killing)
        monkeypatch.setattr(checkpoint.os, "unlink", lambda p: None)  # a SIGKILL runs no clean-up
        with pytest.raises(Killed):
            train(cfg, out, progress=False)
        monkeypatch.setattr(checkpoint.os, "replace", real)
        monkeypatch.undo()
        assert any(p.name.startswith(".") for p in out.iterdir()), k  # the debris of the interrupted write
        r = train(cfg, out, resume=True, progress=False)
        assert r["test_acc"] == ref["test_acc"] and r["selection"]["selected"] == ref["selection"]["selected"], k
        w = load_file(str(out / "trainable.safetensors"))
        assert w.keys() == ref_w.keys() and all(torch.equal(w[n], ref_w[n]) for n in w), k
        assert not [p for p in out.iterdir() if p.name.startswith(".")], k  # the debris is cleared
    assert os.replace is real
