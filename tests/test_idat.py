import math

import pytest
import torch
from conftest import TINY
from hand import cross_entropy, softmax

from vpeft import OBJECTIVES, ConfigError, apply_method, create_backbone
from vpeft.methods.base import count_params, head_param_names
from vpeft.objectives.idat import IDATConfig, idat_loss

TEACHER = "vit_tiny_patch16_224:img_size=32,patch_size=8,embed_dim=16,depth=1,num_heads=2"
Z_S = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.1, -1.2]], dtype=torch.float64)
Z_T = torch.tensor([[0.5, 0.5, 1.0], [-0.2, 1.0, 0.0]], dtype=torch.float64)
Y = torch.tensor([2, 1])


def test_mse_loss_by_hand():
    zs, zt = Z_S.tolist(), Z_T.tolist()
    mse = sum((a - b) ** 2 for r, s in zip(zs, zt) for a, b in zip(r, s)) / 6
    out = idat_loss(Z_S, Z_T, Y, IDATConfig(loss="mse"))
    assert out["loss"].item() == pytest.approx(
        cross_entropy(zs, Y.tolist()) + cross_entropy(zt, Y.tolist()) + mse, rel=1e-12
    )
    assert out["distill"].item() == pytest.approx(mse, rel=1e-12)


def test_kl_loss_by_hand():
    zs, zt = Z_S.tolist(), Z_T.tolist()
    pt, ps = [softmax(r, 5) for r in zt], [softmax(r, 5) for r in zs]
    kl = sum(sum(a * math.log(a / b) for a, b in zip(p, q)) for p, q in zip(pt, ps)) / 2  # KL(p_t || p_s)
    out = idat_loss(Z_S, Z_T, Y, IDATConfig(loss="kl", alpha=0.5))
    assert out["loss"].item() == pytest.approx(
        cross_entropy(zs, Y.tolist()) + cross_entropy(zt, Y.tolist()) + 0.5 * kl, rel=1e-12
    )


def _pair(method="adapter:dim=4", objective=f"idat:teacher='{TEACHER}'"):
    torch.manual_seed(0)
    bb = create_backbone(TINY, num_classes=3)
    apply_method(bb, method)
    return bb, OBJECTIVES.build(objective).attach(bb)


@pytest.mark.parametrize("loss", ["mse", "kl"])
def test_both_models_get_gradients_from_the_distillation_term(loss):
    bb, obj = _pair()
    obj.cfg.loss = loss
    x = torch.randn(4, 3, 32, 32)
    z_s, z_t = bb(x), obj.teacher(x)
    from vpeft.objectives.idat import distill_loss

    distill_loss(z_s, z_t, obj.cfg).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in bb.extras["adapter"].parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.teacher.extras["adapter"].parameters())
    bb.zero_grad(), obj.teacher.zero_grad()
    obj.cfg.detach_teacher = True
    distill_loss(bb(x), obj.teacher(x), obj.cfg).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in obj.teacher.parameters())


def test_vit_b_student_and_vit_s_teacher_counts():
    with torch.device("meta"):
        bb = create_backbone("vit_base_patch16_224", num_classes=10)
        apply_method(bb, "adapter:dim=4")
        obj = OBJECTIVES.build("idat").attach(bb)
    assert count_params(bb, exclude=head_param_names(bb)) == 82_992
    t = obj.teacher
    assert count_params(t, exclude=head_param_names(t)) == 41_520
    assert count_params(t) == 41_520 + 384 * 10 + 10


def test_mismatches_are_clear():
    torch.manual_seed(0)
    bb = create_backbone(TINY, num_classes=3)
    apply_method(bb, "linear")
    with pytest.raises(ConfigError, match="teacher .* takes \\(224, 224\\) images but the student takes \\(32, 32\\)"):
        OBJECTIVES.build("idat").attach(bb)


def test_presets_build_the_six_variants():
    from vpeft.presets import PRESETS, get_preset

    names = [n for n in PRESETS if n.startswith("idat-")]
    assert sorted(names) == sorted(f"idat-{v}-{d}" for v in ("s", "p", "ps") for d in ("mse", "kl"))
    for n in names:
        p = get_preset(n)
        bb, obj = _pair(p["method"], {**p["objective"], "teacher": TEACHER})
        assert obj.cfg.loss == n.rsplit("-", 1)[1]
        assert type(obj.teacher.method) is type(bb.method)
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("idat-x")


def test_joint_run_keeps_only_the_student(small_task, tmp_path, capsys):
    import json

    from safetensors.torch import load_file

    from vpeft.cli import main

    out = tmp_path / "idat"
    assert (
        main(
            [
                "train",
                "--data",
                str(small_task),
                "--backbone",
                TINY,
                "--preset",
                "idat-ps-kl",
                f"objective.teacher={TEACHER}",
                "objective.save_teacher=true",
                "--epochs",
                "2",
                "--batch-size",
                "8",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    keys = set(load_file(str(out / "trainable.safetensors")))
    assert keys and not any("teacher" in k for k in keys)
    assert any("adapter_ps" in k for k in load_file(str(out / "teacher.safetensors")))
    result = json.loads((out / "result.json").read_text())
    assert result["teacher"]["trainable_params"] > 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {"ce_student", "ce_teacher", "distill", "teacher_acc"} <= set(log[0])
    capsys.readouterr()
    assert main(["eval", "--run", str(out)]) == 0  # builds no teacher
    assert "(same)" in capsys.readouterr().out


def test_measure_reports_student_teacher_and_together():
    from vpeft.measure import measure

    r = measure(TINY, "adapter:dim=4", f"idat:teacher='{TEACHER}'", batch_size=2, num_classes=3, timing=False)
    assert r["trainable"] == r["student"]["trainable"] + r["teacher"]["trainable"]
    assert r["saved_activation_bytes"] >= r["student"]["saved_activation_bytes"]
    assert r["train_memory_bytes"] > r["student"]["train_memory_bytes"]


def test_swin_teacher_for_a_swin_student():
    from conftest import TINY_SWIN

    small = "swin_tiny_patch4_window7_224:img_size=32,window_size=4,embed_dim=8,depths=[1,1],num_heads=[1,2]"
    torch.manual_seed(0)
    bb = create_backbone(TINY_SWIN, num_classes=3)
    apply_method(bb, "adapter_ps")
    obj = OBJECTIVES.build({"name": "idat", "teacher": small, "loss": "kl"}).attach(bb)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    out = obj(bb, x, y)
    out["loss"].backward()
    assert out["logits"].shape == (2, 3)
    assert all(p.grad is not None for p in obj.teacher.parameters() if p.requires_grad)
