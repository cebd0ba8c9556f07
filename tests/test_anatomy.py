"""The model anatomy (issue 16): the sites of timm's ViT, Swin and ConvNeXt are the expected modules, and every
registered method applies to the SAM image encoder and the CLIP image tower with trainable counts computed here by
hand from their dimensions, or refuses with a clear reason."""

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, TINY_CONVNEXT, TINY_SWIN

from vpeft import METHODS, OBJECTIVES, apply_method, create_backbone
from vpeft.anatomy import Branch, Site, TimmAnatomy
from vpeft.errors import ConfigError
from vpeft.methods import methods_for
from vpeft.methods.base import count_params, head_param_names

#: A small SAM image encoder: an 8 x 8 grid, a windowed block (window 3, so the grid is padded to 9 x 9) and a
#: global one, a neck of 8 channels.
TINY_SAM = (
    "samvit_base_patch16:img_size=32,patch_size=4,embed_dim=16,depth=2,num_heads=2,window_size=3,"
    "global_attn_indexes=[1],neck_chans=8"
)


def _bb(spec):
    torch.manual_seed(0)
    return create_backbone(spec, num_classes=3)


# ---- (a) the sites of the tiny ViT, Swin and ConvNeXt ----------------------------------------------------------------
def test_vit_sites_are_timms_modules():
    bb = _bb(TINY)
    m, a = bb.model, bb.anatomy
    assert isinstance(a, TimmAnatomy) and a.stacks() == {"blocks": list(m.blocks)} and a.blocks == list(m.blocks)
    assert a.stages() == [(None, list(m.blocks))]
    for blk in m.blocks:
        att = a.attention(blk)
        assert att == {
            "q": Site(blk.attn.qkv, slice(0, 32)),
            "k": Site(blk.attn.qkv, slice(32, 64)),
            "v": Site(blk.attn.qkv, slice(64, 96)),
            "o": Site(blk.attn.proj, slice(0, 32)),
        }
        mlp = a.mlp(blk)
        assert (mlp.module, mlp.fc1, mlp.fc2, mlp.channels_first) == (blk.mlp, blk.mlp.fc1, blk.mlp.fc2, False)
        assert a.norms(blk) == {"norm1": blk.norm1, "norm2": blk.norm2}
        branches = {"attn": Branch(blk, blk.drop_path1), "mlp": Branch(blk.norm2, blk.drop_path2)}
        assert a.residual_branches(blk) == branches and a.width(blk) == 32 and not a.channels_first(blk)
    seq = a.token_sequence()
    assert (seq.module, seq.hook, seq.prefix, seq.width) == (m.norm_pre, "output", 1, 32)
    assert a.token_sequence("pre_norm_pre").hook == "input"
    emb = a.embedding()
    assert (emb.module, emb.last, emb.width) == (m.patch_embed, m.patch_embed.proj, 32)
    assert a.patch_grid() == (4, 4) and a.has_class_token and a.num_prefix_tokens == 1
    spec = a.input_spec
    assert (spec.size, spec.patch, spec.channels) == ((32, 32), (8, 8), 3)
    assert a.head is m.head is bb.head and a.final_norms() == {"norm": m.norm}
    x = torch.randn(2, 3, 32, 32)
    feats = bb.forward_features(x)
    torch.testing.assert_close(a.pooled_features(feats[:, 0]), bb.forward_head(feats, pre_logits=True))
    y = a.embed(x)
    for blk in a.blocks:
        y = blk(y)
    torch.testing.assert_close(a.head_input(y), bb.forward_head(feats, pre_logits=True))
    rows = {(r.owner, r.site): r for r in a.describe()}
    assert (rows["blocks.1", "attention.v"].module, rows["blocks.1", "attention.v"].detail) == (
        "blocks.1.attn.qkv",
        "out[64:96]",
    )
    assert rows["blocks.0", "branch.mlp.output"].module == "blocks.0.drop_path2"
    assert rows["model", "token_sequence.post_norm_pre"].module == "norm_pre" and rows["model", "head"].module == "head"


def test_swin_sites_and_no_token_sequence():
    bb = _bb(TINY_SWIN)
    m, a = bb.model, bb.anatomy
    blocks = [b for layer in m.layers for b in layer.blocks]
    assert a.stacks() == {"layers": blocks} and [s for s, _ in a.stages()] == list(m.layers)
    blk = m.layers[1].blocks[0]
    assert a.attention(blk)["k"] == Site(blk.attn.qkv, slice(32, 64)) and a.attention(blk)["o"].layer is blk.attn.proj
    assert a.residual_branches(blk) == {"attn": Branch(blk, blk.drop_path1), "mlp": Branch(blk.norm2, blk.drop_path2)}
    assert [a.width(b) for b in blocks] == [16, 32]
    assert a.token_sequence() is None and not bb.is_vit
    assert "its tokens are a windowed [B,H,W,C] grid" in a.reason("token_sequence")
    assert a.head is m.head.fc and a.final_norms() == {"norm": m.norm}


def test_convnext_sites_have_no_attention_and_one_branch():
    bb = _bb(TINY_CONVNEXT)
    m, a = bb.model, bb.anatomy
    assert [s for s, _ in a.stages()] == list(m.stages) and len(a.blocks) == 4
    blk = m.stages[2].blocks[0]
    assert a.attention(blk) is None and a.token_sequence() is None and a.embedding() is None
    mlp = a.mlp(blk)  # convnext_atto's conv-MLP: 1 x 1 convolutions after a LayerNorm2d, on NCHW maps
    assert (mlp.module, mlp.fc1, mlp.fc2, mlp.channels_first) == (blk.mlp, blk.mlp.fc1, blk.mlp.fc2, True)
    assert a.residual_branches(blk) == {"block": Branch(blk, blk.drop_path, channels_first=True)}
    assert a.norms(blk) == {"norm": blk.norm} and a.width(blk) == 32
    assert a.channels_first(blk) and a.channels_first(blk.conv_dw) and a.channels_first(blk.norm)
    assert a.head is m.head.fc
    with pytest.raises(
        ConfigError, match="method 'lora' does not apply to ConvNeXt: its ConvNeXtBlock has no attention"
    ):
        apply_method(bb, "lora:rank=2")


def test_describe_lists_every_site_of_every_family():
    for spec in (TINY, TINY_SWIN, TINY_CONVNEXT, TINY_SAM):
        bb = _bb(spec)
        rows = bb.anatomy.describe()
        named = {n for n, _ in bb.model.named_modules()}
        assert rows and all(r.module in named for r in rows), spec
        assert sum(r.site == "head" for r in rows) == 1


# ---- (b) the SAM image encoder and the CLIP image tower: hand-computed counts ----------------------------------------
D, L, MLP, RANK = 768, 12, 3072, 8  # ViT-B/16: width, depth, MLP width; the default rank of LoRA and FacT
BLOCK_OUT = D + 3 * D + D + D + MLP + D  # per block, outputs of norm1, qkv, proj, norm2, fc1, fc2 (= their biases)
BLOCK = 2 * 2 * D + (D * 3 * D + 3 * D) + (D * D + D) + (D * MLP + MLP) + (MLP * D + D)  # every block parameter
ADAPTER = L * (2 * D * 4 + 4 + D)  # dim 4 with biases, one per block
COMMON = {
    "linear": 0,
    "lora": L * 2 * (RANK * D + D * RANK),  # q and v
    "adapter": ADAPTER,
    "adaptformer": ADAPTER,
    "adapter_ps": ADAPTER,
    "fact_tt": 2 * D * RANK + 12 * L * RANK**2,
    "fact_tk": 2 * D * RANK + 12 * L * RANK + RANK**3,
    "dtl": L * 2 * 2 * D,  # rank 2, every block mapped (one stage)
    "dtl_plus": L * 2 * 2 * D + D * 3 * 3,  # plus the shared 3 x 3 depthwise convolution
}
# SAM ViT-B: 64 x 64 grid, windows of 14 with global attention in blocks 2, 5, 8, 11, relative positions per head
# dimension (64) along each axis, a neck 768 -> 256 (1 x 1 conv, LayerNorm2d, 3 x 3 conv, LayerNorm2d, no conv bias).
SAM_REL_POS = 8 * 2 * (2 * 14 - 1) * 64 + 4 * 2 * (2 * 64 - 1) * 64
SAM_NECK = D * 256 + 2 * 256 + 256 * 256 * 9 + 2 * 256
NO_TOKENS = (
    "does not apply to VisionTransformerSAM: its tokens are a windowed \\[B,H,W,C\\] grid, there is no token "
    "sequence to insert into"
)
EXPECTED = {
    "samvit_base_patch16": {
        **COMMON,
        "full": (3 * 16 * 16 * D + D) + 64 * 64 * D + L * BLOCK + SAM_REL_POS + SAM_NECK,
        "bitfit": L * BLOCK_OUT + D + 2 * 256,  # block biases, patch embedding, the neck's two LayerNorm2d
        "ssf": 2 * (D + L * BLOCK_OUT),  # patch embedding and blocks; no final norm before the neck
        "vpt_shallow": "method 'vpt_shallow' " + NO_TOKENS,
        "vpt_deep": "method 'vpt_deep' " + NO_TOKENS,
    },
    "vit_base_patch16_clip_224": {
        **COMMON,
        # patch embedding without bias, class token, 197 positions, norm_pre (ln_pre), blocks, final norm
        "full": 3 * 16 * 16 * D + D + 197 * D + 2 * D + L * BLOCK + 2 * D,
        "bitfit": L * BLOCK_OUT + D + D,  # blocks, norm_pre, norm
        "ssf": 2 * (D + L * BLOCK_OUT + D),  # patch embedding, blocks, final norm
        "vpt_shallow": 10 * D,
        "vpt_deep": L * 10 * D,
    },
}


@pytest.mark.parametrize("backbone", sorted(EXPECTED))
@pytest.mark.parametrize("name", methods_for("timm"))
def test_sam_and_clip_structure(backbone, name):
    """Every method on the SAM encoder and the CLIP image tower (meta device: shapes only): the hand count, or a
    refusal naming the model and the reason."""
    expected = EXPECTED[backbone].get(name)
    assert expected is not None, f"method {name!r}: add its hand-computed count on {backbone} (or its refusal)"
    cfg = METHODS.get(name)()
    with torch.device("meta"):
        bb = create_backbone(backbone, num_classes=10)
        if isinstance(expected, str):
            with pytest.raises(ConfigError, match=expected):
                apply_method(bb, cfg)
            return
        apply_method(bb, cfg)
    assert count_params(bb, exclude=head_param_names(bb)) == cfg.extra_trainable_count(bb) == expected
    assert sum(p.numel() for p in bb.head.parameters()) == (256 if "sam" in backbone else D) * 10 + 10


def test_gist_on_sam_refuses_and_on_clip_adds_one_token():
    with torch.device("meta"):
        sam = create_backbone("samvit_base_patch16", num_classes=10)
        clip = create_backbone("vit_base_patch16_clip_224", num_classes=10)
        apply_method(clip, "linear")
        OBJECTIVES.build("gist").attach(clip)
    assert count_params(clip, exclude=head_param_names(clip)) == D
    with pytest.raises(ConfigError, match="objective 'gist' does not apply to VisionTransformerSAM"):
        OBJECTIVES.build("gist").attach(sam)


def test_sam_anatomy():
    with torch.device("meta"):
        bb = create_backbone("samvit_base_patch16", num_classes=10)
    a, m = bb.anatomy, bb.model
    assert a.head is m.head.fc and a.final_norms() == {} and a.patch_grid() == (64, 64)
    assert a.input_spec.size == (1024, 1024) and a.input_spec.patch == (16, 16)
    windowed = [a.residual_branches(b)["attn"].to_output is not None for b in a.blocks]
    assert windowed == [i not in (2, 5, 8, 11) for i in range(L)]


# ---- a tiny SAM encoder runs every method that applies ---------------------------------------------------------------
SAM_REFUSES = {"vpt_shallow", "vpt_deep"}


@pytest.mark.parametrize("name", methods_for("timm"))
def test_tiny_sam_trains_or_refuses(name):
    cls = METHODS.get(name)
    cfg = cls.from_dict(dict(cls.test_overrides))
    bb = _bb(TINY_SAM)
    if name in SAM_REFUSES:
        with pytest.raises(ConfigError, match=f"method {name!r} " + NO_TOKENS):
            apply_method(bb, cfg)
        return
    apply_method(bb, cfg)
    F.cross_entropy(bb(torch.randn(2, 3, 32, 32)), torch.tensor([0, 2])).backward()
    for n, p in bb.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
    assert count_params(bb, exclude=head_param_names(bb)) == cfg.extra_trainable_count(bb)


def test_parallel_adapter_on_sam_windows_adds_after_the_unpartition():
    """adapter_ps on a windowed SAM block: x + attn_branch(x) + A(x), then + mlp_branch + A(mid), with A(x) laid out
    as the attention's windows (padding included) and cut back with them."""
    from timm.models.vision_transformer_sam import window_partition, window_unpartition

    bb = _bb(TINY_SAM)
    apply_method(bb, "adapter_ps:dim=4,scale=0.5")
    blk, adapter = bb.model.blocks[0], bb.extras["adapter_ps"][0]
    assert blk.window_size == 3
    x = torch.randn(2, 8, 8, 16)
    with torch.no_grad():
        h, pad = window_partition(blk.norm1(x), 3)
        y = x + window_unpartition(blk.attn(h), 3, (8, 8), pad) + adapter(x)
        y = y.reshape(2, 64, 16)
        n2 = blk.norm2
        y = y + blk.mlp(F.layer_norm(y, n2.normalized_shape, n2.weight, n2.bias, n2.eps)) + adapter(y)
        torch.testing.assert_close(blk(x), y.reshape(2, 8, 8, 16))
