import numpy as np
import pytest
import torch
from conftest import TINY, TINY_CONVNEXT, TINY_SWIN
from safetensors.torch import save_file

import vpeft
from vpeft.backbones import create_backbone
from vpeft.errors import CheckpointError, ConfigError


@pytest.mark.parametrize("spec", [TINY, TINY_SWIN, TINY_CONVNEXT], ids=["vit", "swin", "convnext"])
def test_families_build_and_forward(spec):
    bb = create_backbone(spec, num_classes=7)
    x = torch.randn(2, 3, *bb.input_size)
    assert bb(x).shape == (2, 7)
    assert len(bb.blocks) >= 2
    assert isinstance(bb.head, torch.nn.Linear) and bb.head.out_features == 7
    # the fresh head is initialised as the papers' code: trunc_normal(0.02), zero bias
    assert torch.all(bb.head.bias == 0) and bb.head.weight.std() < 0.05


def test_spec_overrides_reach_timm():
    bb = create_backbone(TINY, num_classes=3)
    assert bb.embed_dim == 32 and len(bb.blocks) == 2 and bb.input_size == (32, 32)


def test_bad_specs_fail_clearly():
    with pytest.raises(ConfigError, match="unknown backbone 'vit_tinny_patch16_224'.*vit_tiny_patch16_224"):
        create_backbone("vit_tinny_patch16_224", num_classes=3)
    with pytest.raises(ConfigError, match="backbone"):
        create_backbone("vit_tiny_patch16_224:no_such_kwarg=1", num_classes=3)
    with pytest.raises(ConfigError, match="class token"):
        create_backbone(TINY_CONVNEXT, num_classes=3, pool="token")


def _features(bb):
    torch.manual_seed(1)
    return bb.forward_features(torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_local_checkpoint_roundtrip(tmp_path, fmt):
    torch.manual_seed(0)
    src = create_backbone(TINY, num_classes=5)
    sd = {k: v.contiguous() for k, v in src.model.state_dict().items()}
    path = tmp_path / f"w.{fmt}"
    if fmt == "safetensors":
        save_file(sd, str(path))
    else:
        torch.save({"state_dict": sd}, path)
    torch.manual_seed(123)
    dst = create_backbone(TINY, num_classes=9, checkpoint=path)  # different head size: the head is re-created
    assert torch.equal(_features(src), _features(dst))
    assert dst.head.out_features == 9


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    other = create_backbone("vit_tiny_patch16_224:img_size=32,patch_size=8,embed_dim=48,depth=2,num_heads=2", 5)
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in other.model.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match=r"other.safetensors does not match the backbone.*shape mismatch"):
        create_backbone(TINY, num_classes=5, checkpoint=path)
    deeper = create_backbone("vit_tiny_patch16_224:img_size=32,patch_size=8,embed_dim=32,depth=3,num_heads=2", 5)
    save_file({k: v.contiguous() for k, v in deeper.model.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match=r"unexpected: blocks\.2\."):
        create_backbone(TINY, num_classes=5, checkpoint=path)


def test_corrupt_missing_and_pickled_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        create_backbone(TINY, 3, checkpoint=tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*bad.safetensors"):
        create_backbone(TINY, 3, checkpoint=bad)
    pickled = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": np.random.default_rng(0)}, pickled)
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*evil.pth"):
        create_backbone(TINY, 3, checkpoint=pickled)
    with pytest.raises(CheckpointError, match="unknown format"):
        (tmp_path / "w.ckpt2").write_bytes(b"x")
        create_backbone(TINY, 3, checkpoint=tmp_path / "w.ckpt2")


def _to_google_npz(model, path):
    """Write a timm ViT's weights in the Google ViT .npz naming (inverse of timm's _load_weights)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    w = {}
    w["embedding/kernel"] = sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0)
    w["embedding/bias"] = sd["patch_embed.proj.bias"]
    w["cls"] = sd["cls_token"]
    w["Transformer/posembed_input/pos_embedding"] = sd["pos_embed"]
    w["Transformer/encoder_norm/scale"] = sd["norm.weight"]
    w["Transformer/encoder_norm/bias"] = sd["norm.bias"]
    d = model.embed_dim
    heads = model.blocks[0].attn.num_heads
    for i in range(len(model.blocks)):
        p, b = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        w[p + "LayerNorm_0/scale"], w[p + "LayerNorm_0/bias"] = sd[b + "norm1.weight"], sd[b + "norm1.bias"]
        w[p + "LayerNorm_2/scale"], w[p + "LayerNorm_2/bias"] = sd[b + "norm2.weight"], sd[b + "norm2.bias"]
        qkv_w, qkv_b = sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]
        for j, n in enumerate(["query", "key", "value"]):
            wj = qkv_w[j * d : (j + 1) * d]  # (out=d, in=d)
            w[p + f"MultiHeadDotProductAttention_1/{n}/kernel"] = wj.T.reshape(d, heads, d // heads)
            w[p + f"MultiHeadDotProductAttention_1/{n}/bias"] = qkv_b[j * d : (j + 1) * d].reshape(heads, d // heads)
        w[p + "MultiHeadDotProductAttention_1/out/kernel"] = sd[b + "attn.proj.weight"].T.reshape(heads, d // heads, d)
        w[p + "MultiHeadDotProductAttention_1/out/bias"] = sd[b + "attn.proj.bias"]
        for k, n in ((0, "fc1"), (1, "fc2")):
            w[p + f"MlpBlock_3/Dense_{k}/kernel"] = sd[b + f"mlp.{n}.weight"].T
            w[p + f"MlpBlock_3/Dense_{k}/bias"] = sd[b + f"mlp.{n}.bias"]
    np.savez(path, **w)


def test_google_npz_checkpoint(tmp_path):
    torch.manual_seed(0)
    src = create_backbone(TINY, num_classes=5)
    path = tmp_path / "ViT-tiny.npz"
    _to_google_npz(src.model, path)
    torch.manual_seed(99)
    dst = create_backbone(TINY, num_classes=5, checkpoint=path)
    torch.testing.assert_close(_features(src), _features(dst), rtol=1e-5, atol=1e-5)
    wrong = "vit_tiny_patch16_224:img_size=32,patch_size=8,embed_dim=48,depth=2,num_heads=2"
    with pytest.raises(CheckpointError, match="ViT-tiny.npz does not match the backbone"):
        create_backbone(wrong, num_classes=5, checkpoint=path)


def test_avg_pool_is_mean_of_patch_tokens_then_final_norm():
    torch.manual_seed(0)
    tok = create_backbone(TINY, num_classes=4, pool="token")
    torch.manual_seed(0)
    avg = create_backbone(TINY, num_classes=4, pool="avg")
    avg.model.head.load_state_dict(tok.model.head.state_dict())
    x = torch.randn(2, 3, 32, 32)
    m = tok.model
    h = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))
    h = m.blocks(h)
    expected = m.head(m.norm(h[:, 1:].mean(1)))  # LN(mean of patch tokens), the pretrained norm
    torch.testing.assert_close(avg(x), expected)
    assert avg.pool == "avg" and isinstance(avg.model.norm, torch.nn.Identity)


def test_hub_weights_offline_fail_fast_and_clearly():
    import time

    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="--checkpoint"):
        create_backbone("vit_tiny_patch16_224", num_classes=3, pretrained=True)
    assert time.perf_counter() - t0 < 30


def test_token_hook_inserts_prefix_tokens_left_out_of_pooling():
    torch.manual_seed(0)
    bb = create_backbone(TINY, num_classes=3, pool="avg")
    x = torch.randn(2, 3, 32, 32)
    base = bb(x)
    extra = torch.nn.Parameter(torch.zeros(1, 2, 32))
    bb.register_token_hook(lambda t: torch.cat([t[:, :1], extra.expand(len(t), -1, -1), t[:, 1:]], 1), 2)
    assert bb.num_prefix_tokens == 3
    feats = bb.forward_features(x)
    assert feats.shape[1] == 1 + 2 + 16
    out = bb(x)
    assert out.shape == base.shape and not torch.equal(out, base)  # the tokens take part in attention
    inter = bb.model.forward_intermediates(x, indices=[0], output_fmt="NLC", intermediates_only=True)
    assert inter[0].shape[1] == 16  # prefix (class + inserted) tokens stripped
    assert bb.token_slots == {"tokens": slice(1, 3)}
    bb.remove_hooks()
    assert bb.model.num_prefix_tokens == 1 and bb.token_slots == {}
    assert torch.equal(bb(x), base)


def test_block_hooks_read_inputs_and_rewrite_outputs():
    torch.manual_seed(0)
    bb = create_backbone(TINY, num_classes=3)
    x = torch.randn(2, 3, 32, 32)
    base = bb(x)
    seen = []
    bb.register_block_hook(0, pre=lambda t: seen.append(t.shape))
    assert torch.equal(bb(x), base) and seen == [(2, 17, 32)]
    bb.register_block_hook(1, post=lambda y: y * 0)
    out = bb(x)
    torch.testing.assert_close(out, bb.head(bb.model.norm(torch.zeros(2, 32))))
    with pytest.raises(ConfigError, match="out of range"):
        bb.register_block_hook(5, pre=print)


def test_public_api():
    for name in ("create_backbone", "apply_method", "trainable_state_dict", "load_trainable", "measure", "METHODS"):
        assert hasattr(vpeft, name)
