import math

import pytest
import torch
from conftest import TINY, TINY_SWIN
from hand import cross_entropy, kl, softmax

from vpeft import METHODS, OBJECTIVES, ConfigError, apply_method, create_backbone
from vpeft.methods import methods_for
from vpeft.methods.base import count_params, head_param_names
from vpeft.objectives.gist import GISTConfig, gist_loss

Z_CLS = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.5, -0.5]], dtype=torch.float64)
Z_GIST = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 2.0, 1.0]], dtype=torch.float64)
Y = torch.tensor([0, 2])


def _hand(interaction, T=3.0, mu=0.5, lam=0.75, t2=False):
    zc, zg, y = Z_CLS.tolist(), Z_GIST.tolist(), Y.tolist()
    pc, pg = [softmax(r, T) for r in zc], [softmax(r, T) for r in zg]
    scale = T * T if t2 else 1.0
    inter = {
        "bkl": scale * (kl(pc, pg) + kl(pg, pc)),
        "fkl": scale * kl(pc, pg),
        "rkl": scale * kl(pg, pc),
        "mse": sum((a - b) ** 2 for r, s in zip(zc, zg) for a, b in zip(r, s)) / 6,
        "cos": sum(
            1 - sum(a * b for a, b in zip(r, s)) / math.sqrt(sum(a * a for a in r) * sum(b * b for b in s))
            for r, s in zip(zc, zg)
        )
        / 2,
    }[interaction]
    return cross_entropy(zc, y) + mu * cross_entropy(zg, y) + lam * inter


@pytest.mark.parametrize("interaction", ["bkl", "fkl", "rkl", "mse", "cos"])
def test_loss_equals_hand_computation(interaction):
    out = gist_loss(Z_CLS, Z_GIST, Y, GISTConfig(interaction=interaction))
    assert out["loss"].item() == pytest.approx(_hand(interaction), rel=1e-12)


def test_loss_switches():
    out = gist_loss(Z_CLS, Z_GIST, Y, GISTConfig(t2=True, lam=0.25, mu=1.0, temperature=2.0))
    assert out["loss"].item() == pytest.approx(_hand("bkl", T=2.0, mu=1.0, lam=0.25, t2=True), rel=1e-12)
    only_kl = gist_loss(Z_CLS, Z_GIST, Y, GISTConfig(ce_cls=False, mu=0.0))
    assert only_kl["loss"].item() == pytest.approx(0.75 * (only_kl["kl_fwd"] + only_kl["kl_rev"]).item(), rel=1e-12)
    assert only_kl["ce_cls"].item() == 0 and only_kl["ce_gist"].item() == 0
    with pytest.raises(ConfigError, match="every loss term is off"):
        OBJECTIVES.build("gist:ce_cls=false,mu=0,lam=0")


def test_default_logged_parts():
    out = gist_loss(Z_CLS, Z_GIST, Y, GISTConfig())
    assert {"loss", "ce_cls", "ce_gist", "kl_fwd", "kl_rev"} == set(out)
    # the two KL directions differ for these logits, and each matches its hand value
    zc, zg = Z_CLS.tolist(), Z_GIST.tolist()
    pc, pg = [softmax(r, 3) for r in zc], [softmax(r, 3) for r in zg]
    assert out["kl_fwd"].item() == pytest.approx(kl(pc, pg), rel=1e-12)
    assert out["kl_rev"].item() == pytest.approx(kl(pg, pc), rel=1e-12)


def _gist_model(method="adapter_ps", spec=TINY, objective="gist"):
    torch.manual_seed(0)
    bb = create_backbone(spec, num_classes=3)
    apply_method(bb, method)
    obj = OBJECTIVES.build(objective).attach(bb)
    return bb, obj


@pytest.mark.parametrize("direction", ["fkl", "rkl"])
def test_gradients_flow_through_each_kl_direction(direction):
    bb, obj = _gist_model(objective=f"gist:ce_cls=false,mu=0,interaction={direction},dropout=0")
    x = torch.randn(4, 3, 32, 32)
    obj(bb, x, torch.tensor([0, 1, 2, 0]))["loss"].backward()
    assert bb.extras["gist"].gist_token.grad.abs().sum() > 0
    assert all(p.grad.abs().sum() > 0 for p in bb.extras["adapter_ps"].parameters())
    assert bb.head.weight.grad.abs().sum() > 0


def test_detach_stops_gradient_through_the_target():
    bb, obj = _gist_model(method="linear", objective="gist:ce_cls=false,mu=0,interaction=fkl,detach=true,dropout=0")
    x = torch.randn(4, 3, 32, 32)
    obj(bb, x, torch.tensor([0, 1, 2, 0]))["loss"].backward()
    # KL(p_cls || p_gist) with p_cls detached: the gist token still learns
    assert bb.extras["gist"].gist_token.grad.abs().sum() > 0


def test_token_placement_and_prediction_uses_class_logits():
    bb, obj = _gist_model(method="linear", objective="gist:dropout=0")
    token = bb.extras["gist"].gist_token
    seen = []
    bb.model.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    x = torch.randn(2, 3, 32, 32)
    bb.eval()
    logits = obj.predict(bb, x)
    assert seen[0].shape[1] == 1 + 1 + 16
    torch.testing.assert_close(seen[0][:, 1], token[0].expand(2, -1))  # index 1, no position embedding
    z_cls, z_gist = obj.logits(bb, x)
    torch.testing.assert_close(logits, z_cls)
    feats = bb.forward_features(x)
    torch.testing.assert_close(z_gist, bb.head(feats[:, 1]))  # the shared head on the final-normed gist token


@pytest.mark.parametrize("name", methods_for("timm"))
def test_every_method_gains_length_times_dim(name):
    cls = METHODS.get(name)
    with torch.device("meta"):
        bb = create_backbone(TINY, num_classes=3)
        apply_method(bb, cls.from_dict(cls.test_overrides))
        before = count_params(bb)
        OBJECTIVES.build("gist:length=2").attach(bb)
    assert count_params(bb) == before + 2 * 32


def test_vit_b_adapter_ps_with_gist_is_83760():
    with torch.device("meta"):
        bb = create_backbone("vit_base_patch16_224", num_classes=10)
        apply_method(bb, "adapter_ps:dim=4")
        OBJECTIVES.build("gist").attach(bb)
    assert count_params(bb, exclude=head_param_names(bb)) == 83_760


def test_swin_is_refused_clearly():
    torch.manual_seed(0)
    bb = create_backbone(TINY_SWIN, num_classes=3)
    apply_method(bb, "lora:rank=2")
    with pytest.raises(ConfigError, match="objective 'gist' does not apply to SwinTransformer"):
        OBJECTIVES.build("gist").attach(bb)


def test_vpt_source_uses_the_prompts():
    bb, obj = _gist_model(method="vpt_deep:length=2,dropout=0", objective="gist:source=vpt,mu=1,lam=0")
    assert "gist" not in bb.extras and obj.slot == slice(1, 3)
    x = torch.randn(2, 3, 32, 32)
    bb.eval()
    feats = bb.forward_features(x)
    _, z = obj.logits(bb, x)
    torch.testing.assert_close(z, bb.head(feats[:, 1:3].mean(1)))
    with pytest.raises(ConfigError, match="source=vpt needs"):
        _gist_model(method="lora:rank=2", objective="gist:source=vpt")


def test_gist_run_rebuilds_from_its_directory(small_task, tmp_path, capsys):
    import json

    from safetensors.torch import load_file

    from vpeft.cli import main

    out = tmp_path / "gist"
    assert (
        main(
            [
                "train",
                "--data",
                str(small_task),
                "--backbone",
                TINY,
                "--method",
                "adapter_ps",
                "--objective",
                "gist",
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
    assert "extras.gist.gist_token" in load_file(str(out / "trainable.safetensors"))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {"ce_cls", "ce_gist", "kl_fwd", "kl_rev"} <= set(log[0])
    capsys.readouterr()
    assert main(["eval", "--run", str(out)]) == 0
    assert "(same)" in capsys.readouterr().out
