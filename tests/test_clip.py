"""The ``clip`` family, the ``clip_classify`` task and prompt learning (issue 19): CLIP's image tower (timm) with its
text classifier (open_clip's text tower) as the head.

Checked here: image and text features and the logits equal open_clip's own CLIP on the same random weights (a
checkpoint file, and OpenAI's TorchScript layout); a checkpoint that does not match names the tensor; MaPLe's count on
ViT-B/16 (3,555,072, meta device) and its insertion points by hand on both towers (the visual prompts after the class
token give the logits of MaPLe's appended ones); CoOp's and the linear probe's counts and starts; GIST for CLIP's loss
by hand; a MaPLe run's save / resume / eval with only the prompt tensors saved; zero-shot; the refusals.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("open_clip", reason="the clip family needs open_clip_torch (pip install 'vpeft[clip]')")

from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg  # noqa: E402

from vpeft import apply_method, create_backbone  # noqa: E402
from vpeft.cli import main  # noqa: E402
from vpeft.config import RunConfig  # noqa: E402
from vpeft.engine.trainer import train  # noqa: E402
from vpeft.errors import CheckpointError, ConfigError  # noqa: E402
from vpeft.families.clip import tokenize  # noqa: E402
from vpeft.methods.base import count_params  # noqa: E402
from vpeft.objectives.gist import GISTConfig  # noqa: E402

NAMES = ["cat", "dog", "red car"]


def _reference(seed=0):
    """open_clip's CLIP in ``clip:tiny``'s configuration, every tensor drawn N(0, 0.1^2) (the logit scale kept)."""
    ref = CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(width=32, heads=2, layers=2),
        quick_gelu=True,
    ).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in ref.state_dict().items():
            if k != "logit_scale":
                v.copy_(torch.randn(v.shape, generator=g) * 0.1)
    return ref


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    ref = _reference()
    path = tmp_path_factory.mktemp("clip") / "clip_tiny.pt"
    torch.save(ref.state_dict(), path)
    return ref, path


def _tiny(path=None, method="linear", names=NAMES, template="a photo of a {}."):
    bb = create_backbone("clip:tiny", num_classes=len(names), checkpoint=path)
    bb.model.head.set_classes(names, template)
    apply_method(bb, method)
    return bb.eval()


# ---- parity with open_clip -------------------------------------------------------------------------------------------
def test_features_and_logits_equal_open_clips_on_the_same_weights(checkpoint):
    ref, path = checkpoint
    bb = _tiny(path, "zeroshot")
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    tokens = tokenize([f"a photo of a {n}." for n in NAMES])
    head = bb.model.head
    with torch.no_grad():
        want_img, want_txt = ref.encode_image(x), ref.encode_text(tokens)
        got_img = head.proj(bb.forward_head(bb.forward_features(x), pre_logits=True))
        got_txt = head.encode_text(tokens)
        want = ref.logit_scale.exp() * F.normalize(want_img, dim=-1) @ F.normalize(want_txt, dim=-1).t()
        got = bb(x)
    torch.testing.assert_close(got_img, want_img, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_txt, want_txt, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert head.logit_scale.item() == pytest.approx(math.log(1 / 0.07)) and not head.logit_scale.requires_grad
    assert want.abs().max() > 1


def test_openais_torchscript_archive_loads_its_tensors(checkpoint, tmp_path):
    """OpenAI's ViT-B-16.pt is a TorchScript archive (with input_resolution, context_length and vocab_size beside
    the weights): its tensors are read without unpickling Python code."""
    ref, _ = checkpoint

    class Holder(torch.nn.Module):  # a scripted module with exactly the checkpoint's tensor names
        def __init__(self, sd):
            super().__init__()
            for k, v in sd.items():
                *path, leaf = k.split(".")
                m = self
                for p in path:
                    if not hasattr(m, p):
                        m.add_module(p, torch.nn.Module())
                    m = getattr(m, p)
                m.register_buffer(leaf, v.clone())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    sd = {**ref.state_dict(), "input_resolution": torch.tensor(32), "context_length": torch.tensor(77)}
    sd["vocab_size"] = torch.tensor(49408)
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.save(torch.jit.script(Holder(sd)), str(path))
    a = _tiny(path, "zeroshot")
    b = _tiny(checkpoint[1], "zeroshot")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda sd: sd.pop("ln_final.bias"), r"missing: ln_final\.bias"),
        (
            lambda sd: sd.pop("visual.transformer.resblocks.1.mlp.c_fc.weight"),
            r"missing: visual\.transformer\.resblocks\.1\.mlp\.c_fc\.weight",
        ),  # noqa: E501
        (lambda sd: sd.update(extra=torch.zeros(1)), r"unexpected: extra"),
        (
            lambda sd: sd.update({"visual.proj": torch.zeros(32, 8)}),
            r"shape mismatch: visual\.proj \(8, 32\) vs \(16, 32\)",
        ),  # noqa: E501
    ],
)
def test_a_checkpoint_that_does_not_match_names_the_tensor(checkpoint, tmp_path, edit, message):
    sd = dict(checkpoint[0].state_dict())
    edit(sd)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=rf"bad\.pt does not match the backbone \(CLIP, .*{message}"):
        create_backbone("clip:tiny", num_classes=3, checkpoint=tmp_path / "bad.pt")


def test_specs_and_refusals():
    with pytest.raises(ConfigError, match=r"unknown clip backbone 'vit_x' \(valid: vit_b16, vit_b32, vit_l14, tiny\)"):
        create_backbone("clip:vit_x", num_classes=2)
    with pytest.raises(ConfigError, match=r"no hub weights: pass OpenAI's ViT-B-16\.pt"):
        create_backbone("clip:tiny", num_classes=2, pretrained=True)
    bb = create_backbone("clip:tiny", num_classes=3)
    with pytest.raises(ConfigError, match=r"classifies by its classes' names, and none were given"):
        bb(torch.randn(1, 3, 32, 32))
    with pytest.raises(ConfigError, match=r"2 class names for a head of 3 classes"):
        bb.model.head.set_classes(["a", "b"])
    with pytest.raises(ConfigError, match=r"method 'maple' applies to clip backbones only, not 'vit_c10_small'"):
        apply_method(create_backbone("vit_c10_small", num_classes=3), "maple")


# ---- methods: counts on ViT-B/16 and insertion points ----------------------------------------------------------------
@pytest.mark.parametrize(
    "method, count",
    [
        ("maple", 1_024 + 393_984 + 8 * (1_024 + 393_984)),  # 3,555,072: the paper's 3.56M
        ("coop", 16 * 512),
        ("coop:n_ctx=4,init=a photo of a", 4 * 512),
        ("linear", 102 * 512),  # a probe: class embeddings in the joint space
        ("zeroshot", 0),
        ("lora", 12 * 2 * (8 * 768 + 768 * 8)),  # the image tower only: the text classifier stays frozen
    ],
)
def test_counts_on_clip_vit_b16(method, count):
    with torch.device("meta"):
        bb = create_backbone("clip:vit_b16", num_classes=102)
        bb.model.head.set_classes([f"class {i}" for i in range(102)])
        apply_method(bb, method)
    assert count_params(bb) == count == bb.method.extra_trainable_count(bb) + (count if method == "linear" else 0)
    if method == "maple":
        assert count == 3_555_072
        gist = GISTConfig().attach(bb)
        assert count_params(bb) + count_params(gist) == 3_555_072 + 768  # a gist token keeps MaPLe + GIST 3.56M


def test_maple_starts_from_a_photo_and_its_deep_projections_are_clones(checkpoint):
    bb = _tiny(checkpoint[1], "maple:depth=2")
    prompts = bb.extras["maple"]
    emb = bb.model.head.text.token_embedding.weight
    a_photo = tokenize(["a photo"])[0, 1:3]
    torch.testing.assert_close(prompts.ctx.detach(), emb[a_photo].detach())
    assert prompts.prefix == "a photo of a" and len(prompts.deep) == 1 and len(prompts.deep_proj) == 1
    bb3 = create_backbone("clip:tiny:depth=3,text_layers=3", num_classes=3)
    bb3.model.head.set_classes(NAMES)
    apply_method(bb3, "maple:depth=3")
    p3 = bb3.extras["maple"].deep_proj
    assert torch.equal(p3[0].weight, p3[1].weight) and not torch.equal(p3[0].weight, bb3.extras["maple"].proj.weight)


def test_maple_prompts_sit_where_maples_code_puts_them(checkpoint):
    """By hand, as MaPLe's clip/model.py runs: text context at positions 1..n of "a photo of a {class}." before the
    position embedding, deep text prompts replacing them before text block 1; visual prompts proj(ctx) appended after
    the patches before ln_pre, the last n tokens replaced by deep_proj(deep) before image block 1."""
    bb = _tiny(checkpoint[1], "maple:depth=2")
    head, p = bb.model.head, bb.extras["maple"]
    with torch.no_grad():
        p.ctx.normal_(), p.deep[0].normal_()  # far from the start, so a misplaced prompt shows
    tokens = tokenize([f"a photo of a {n}." for n in NAMES])
    text = head.text
    with torch.no_grad():
        x = text.token_embedding(tokens)
        x = torch.cat([x[:, :1], p.ctx.expand(3, -1, -1), x[:, 3:]], 1) + text.positional_embedding
        blocks = text.transformer.resblocks
        x = blocks[0](x, attn_mask=text.attn_mask)
        x = torch.cat([x[:, :1], p.deep[0].expand(3, -1, -1), x[:, 3:]], 1)
        x = text.ln_final(blocks[1](x, attn_mask=text.attn_mask))
        want_text = x[torch.arange(3), tokens.argmax(-1)] @ text.text_projection
        torch.testing.assert_close(head.encode_classes(), want_text, rtol=1e-5, atol=1e-5)
        m, images = bb.model, torch.randn(2, 3, 32, 32)
        got = bb(images)
        slots = dict(bb.token_slots)
        bb.remove_hooks()  # the tower by hand, as MaPLe's code runs it
        v = m._pos_embed(m.patch_embed(images))
        v = torch.cat([v, p.proj(p.ctx).expand(2, -1, -1)], 1)  # MaPLe: appended after the patches
        v = m.blocks[0](m.norm_pre(v))
        v = torch.cat([v[:, :-2], p.deep_proj[0](p.deep[0]).expand(2, -1, -1)], 1)
        v = m.norm(m.blocks[1](v))[:, 0]
        img, txt = F.normalize(head.proj(v), dim=-1), F.normalize(want_text, dim=-1)
        torch.testing.assert_close(got, head.logit_scale.exp() * img @ txt.t(), rtol=1e-5, atol=1e-5)
    assert slots["maple"] == slice(1, 3)


def test_coop_learns_the_context_of_x_prompts(checkpoint):
    bb = _tiny(checkpoint[1], "coop:n_ctx=3")
    learner, head = bb.extras["coop"], bb.model.head
    assert learner.prefix == "X X X" and learner.ctx.shape == (3, 32)
    assert abs(learner.ctx.std().item() - 0.02) < 0.015
    tokens = tokenize([f"X X X {n}." for n in NAMES])
    with torch.no_grad():
        torch.testing.assert_close(head.encode_classes(), head.encode_text(tokens, learner.ctx))
    out = bb.train()(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert learner.ctx.grad is not None and all(p.grad is None for p in head.parameters())


def test_a_linear_probe_starts_at_the_zero_shot_prediction(checkpoint):
    zero = _tiny(checkpoint[1], "zeroshot")
    probe = _tiny(checkpoint[1], "linear")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(probe(x), zero(x), rtol=1e-5, atol=1e-5)
    assert [n for n, p in probe.named_parameters() if p.requires_grad] == ["model.head.probe"]


def test_gist_for_clip_by_hand(checkpoint):
    """vpeft's GIST on CLIP: the gist token's final state through ln_post and the projection, z_g = logit_scale *
    cos(gist, text); the loss CE + mu CE_gist + lambda (KL(p_c||p_g) + KL(p_g||p_c)) at temperature T."""
    bb = _tiny(checkpoint[1], "maple:depth=2")
    gist = GISTConfig(temperature=2.0, dropout=0.0).attach(bb)
    bb.eval(), gist.eval()
    assert gist.own_definition.startswith("GIST on CLIP is vpeft's own definition")  # recorded in result.json
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([0, 2, 1])
    with torch.no_grad():
        out = gist(bb, x, y)
        feats = bb.forward_features(x)
        slot = bb.token_slots["gist"]
        head = bb.model.head
        text = F.normalize(head.encode_classes(), dim=-1)
        zc = head.logit_scale.exp() * F.normalize(head.proj(feats[:, 0]), dim=-1) @ text.t()
        zg = head.logit_scale.exp() * F.normalize(head.proj(feats[:, slot].mean(1)), dim=-1) @ text.t()
        pc, pg = F.log_softmax(zc / 2, -1), F.log_softmax(zg / 2, -1)
        kl = F.kl_div(pg, pc, log_target=True, reduction="batchmean") + F.kl_div(
            pc, pg, log_target=True, reduction="batchmean"
        )
        want = F.cross_entropy(zc, y) + 0.5 * F.cross_entropy(zg, y) + 0.75 * kl
    assert slot == slice(3, 4)  # after the class token and MaPLe's two visual prompts
    torch.testing.assert_close(out["logits"], zc, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["loss"], want, rtol=1e-5, atol=1e-5)


# ---- runs ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes(synth_root):
    return synth_root / "shapes"


def _cfg(root, method, epochs=2, objective="ce", **task):
    return RunConfig.from_dict(
        {
            "backbone": {"spec": "clip:tiny"},
            "method": method,
            "objective": objective,
            "task": {"name": "clip_classify", **task},
            "data": {"root": str(root)},
            "train": {"epochs": epochs, "batch_size": 16, "lr": 0.01, "optimizer": "sgd", "device": "cpu"},
        }
    )


class Killed(Exception):
    pass


def test_a_maple_run_saves_only_its_prompts_resumes_and_evaluates(shapes, tmp_path, capsys):
    from safetensors import safe_open

    whole = train(_cfg(shapes, "maple:depth=2", 3, "gist"), tmp_path / "whole", progress=False)

    def kill(epoch, entry):
        if epoch == 2:
            raise Killed()

    with pytest.raises(Killed):
        train(_cfg(shapes, "maple:depth=2", 3, "gist"), tmp_path / "part", progress=False, on_epoch_end=kill)
    part = train(_cfg(shapes, "maple:depth=2", 3, "gist"), tmp_path / "part", resume=True, progress=False)
    assert part["test_acc"] == whole["test_acc"]
    with safe_open(str(tmp_path / "whole" / "trainable.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert keys and all(k.startswith(("extras.maple.", "extras.gist")) for k in keys), keys
    assert whole["class_names"] == (shapes / "classes.txt").read_text().split()[1::2]
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "whole")]) == 0
    assert f"recorded accuracy {whole['test_acc']:.4f} (same)" in capsys.readouterr().out


def test_zero_shot_trains_nothing_and_evaluates(shapes, tmp_path, capsys):
    r = train(_cfg(shapes, "zeroshot", template="dtd"), tmp_path / "zs", progress=False)
    assert r["trainable_params"] == 0 and r["selected_epoch"] == 0 and r["protocol"]["epochs"] == 0
    log = tmp_path / "zs" / "log.jsonl"
    assert not log.exists() or not log.read_text().strip()  # no epoch
    assert r["class_names"] == (shapes / "classes.txt").read_text().split()[1::2]
    with pytest.raises(ConfigError, match=r"trains nothing, but objective 'gist' adds trainable tensors"):
        train(_cfg(shapes, "zeroshot", objective="gist"), tmp_path / "zsg", progress=False)
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "zs")]) == 0
    assert "(same)" in capsys.readouterr().out


def test_the_task_needs_a_clip_backbone_and_class_names(shapes, tmp_path, capsys):
    cfg = _cfg(shapes, "linear")
    cfg.backbone.spec = "vit_c10_small"
    with pytest.raises(ConfigError, match=r"task clip_classify classifies by CLIP's text tower: it needs a clip"):
        train(cfg, tmp_path / "a", progress=False)
    (tmp_path / "nonames").mkdir()
    for f in shapes.iterdir():
        if f.name != "classes.txt":
            (tmp_path / "nonames" / f.name).symlink_to(f)
    with pytest.raises(ConfigError, match=r"reads the class names from the data, and it names none"):
        train(_cfg(tmp_path / "nonames", "linear"), tmp_path / "b", progress=False)
    cfg = _cfg(shapes, "linear")
    cfg.task = RunConfig.from_dict({"task": "classify"}).task
    with pytest.raises(ConfigError, match=r"does task 'clip_classify', not 'classify': train it with --task"):
        train(cfg, tmp_path / "c", progress=False)
    with pytest.raises(ConfigError, match=r"template 'x' is neither a known one"):
        _cfg(shapes, "linear", template="x")


def test_a_clip_lora_run_merges_and_predicts_its_classes(shapes, tmp_path, capsys):
    """vpeft merge folds LoRA into the image tower; the merged file rebuilds the clip model with its text
    classifier (class names and template from the metadata) and predicts what the run predicts."""
    run = tmp_path / "lora"
    train(_cfg(shapes, "lora:rank=2", 1, template="dtd"), run, progress=False)
    assert main(["merge", "--run", str(run), "--out", str(tmp_path / "m.safetensors")]) == 0
    image = str(shapes / "images" / "test" / "000000.png")
    capsys.readouterr()
    for flag, path in (("--run", run), ("--merged", tmp_path / "m.safetensors")):
        assert main(["predict", flag, str(path), "--images", image, "--json", "--no-progress"]) == 0
    a, b = (json.loads(line) for line in capsys.readouterr().out.strip().splitlines())
    assert a["class"] == b["class"] and a["probability"] == pytest.approx(b["probability"], abs=1e-5)


@pytest.mark.parametrize(
    "task, template, first", [("dtd_10cls", "dtd", "banded"), ("flowers102_89cls", "flowers", None)]
)
def test_the_shared_vtab_tasks_classes_prompt_clip(tmp_path, task, template, first):
    """../shared/data/vtab1k's flowers102_89cls and dtd_10cls name their classes in classes.txt: clip_classify reads
    them as they are (a run with real CLIP weights needs only --checkpoint); zero-shot on the tiny random CLIP."""
    from conftest import SHARED_DATA

    root = SHARED_DATA / "vtab1k" / task
    if not root.is_dir():
        pytest.skip(f"{root} is not here (the shared data is beside checkouts and CI only)")
    cfg = RunConfig.from_dict(
        {
            "backbone": {"spec": "clip:tiny"},
            "method": "zeroshot",
            "task": {"name": "clip_classify", "template": template},
            "data": {"root": str(root), "img_size": 32},
            "train": {"device": "cpu", "batch_size": 64},
        }
    )
    r = train(cfg, tmp_path / "zs", progress=False)
    names = [line.split(maxsplit=1)[1] for line in (root / "classes.txt").read_text().splitlines() if line.strip()]
    assert r["class_names"] == names and r["num_classes"] == len(names) and r["test_total"] > 0
    assert first is None or names[0] == first
