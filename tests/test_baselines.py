"""Baseline methods: exact counts on ViT-B/16, hand-written formulas on the tiny ViT, other backbone families."""

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, TINY_CONVNEXT, TINY_SWIN

from vpeft import METHODS, ConfigError, apply_method, create_backbone
from vpeft.methods import methods_for
from vpeft.methods.base import count_params, head_param_names

# Trainable parameters on vit_base_patch16_224, head excluded (issue #3; the papers' tables).
VIT_B_COUNTS = {
    "adapter:dim=4": 82_992,
    "adapter:dim=8": 156_768,
    "adaptformer:dim=4": 82_992,
    "adapter_ps:dim=4": 82_992,
    "lora:rank=8": 294_912,
    "lora:rank=8,targets=[qkv]": 294_912,
    "vpt_shallow:length=10": 7_680,
    "vpt_deep:length=10": 92_160,
    "ssf": 205_824,
    # FacT's formulas: TT 2dr + 12Lr^2, TK 2dr + 12Lr + r^3 (d = 768, L = 12, r = 8)
    "fact_tt:rank=8": 2 * 768 * 8 + 12 * 12 * 64,
    "fact_tk:rank=8": 2 * 768 * 8 + 12 * 12 * 8 + 512,
    "bitfit": 102_912,
}


@pytest.fixture(scope="module")
def vit_b():
    return create_backbone("vit_base_patch16_224", num_classes=10)


@pytest.mark.parametrize("spec", sorted(VIT_B_COUNTS))
def test_vit_b_counts(spec):
    torch.manual_seed(0)
    bb = create_backbone("vit_base_patch16_224", num_classes=10)
    apply_method(bb, spec)
    assert count_params(bb, exclude=head_param_names(bb)) == VIT_B_COUNTS[spec]
    assert count_params(bb) == VIT_B_COUNTS[spec] + 7690


def test_fact_counts_are_21504_and_13952():
    assert VIT_B_COUNTS["fact_tt:rank=8"] == 21_504 and VIT_B_COUNTS["fact_tk:rank=8"] == 13_952


def _tiny(method):
    torch.manual_seed(0)
    bb = create_backbone(TINY, num_classes=5)
    apply_method(bb, method)
    for p in bb.parameters():  # move zero-initialised factors so every path is exercised
        if p.requires_grad:
            with torch.no_grad():
                p.add_(torch.randn_like(p) * 0.05)
    return bb.eval()


def _x():
    return torch.randn(2, 17, 32, generator=torch.Generator().manual_seed(0))


def test_sequential_adapter_formula():
    bb = _tiny("adapter:dim=4")
    blk, a = bb.model.blocks[0], bb.extras["adapter"][0]
    x = _x()
    h = x + blk.attn(blk.norm1(x))
    h = h + blk.mlp(blk.norm2(h))
    torch.testing.assert_close(blk(x), h + a.up(F.gelu(a.down(h))))


def test_houlsby_adapter_is_on_the_mlp_output():
    bb = _tiny("adapter:dim=4,position=mlp")
    blk, a = bb.model.blocks[0], bb.extras["adapter"][0]
    x = _x()
    h = x + blk.attn(blk.norm1(x))
    m = blk.mlp.fc2(blk.mlp.act(blk.mlp.fc1(blk.norm2(h))))
    torch.testing.assert_close(blk(x), h + m + a.up(F.gelu(a.down(m))))


def test_adaptformer_formula():
    bb = _tiny("adaptformer:dim=4")
    blk, a = bb.model.blocks[0], bb.extras["adaptformer"][0]
    x = _x()
    h = x + blk.attn(blk.norm1(x))
    expected = h + blk.mlp(blk.norm2(h)) + 0.1 * a.up(F.gelu(a.down(h)))
    torch.testing.assert_close(blk(x), expected)


def test_parallel_shared_adapter_formula():
    bb = _tiny("adapter_ps")
    blk, a = bb.model.blocks[0], bb.extras["adapter_ps"][0]
    A = lambda t: 0.1 * a.up(F.gelu(a.down(t)))  # noqa: E731
    x = _x()
    h = x + blk.attn(blk.norm1(x)) + A(x)
    torch.testing.assert_close(blk(x), h + blk.mlp(blk.norm2(h)) + A(h))


@pytest.mark.parametrize("targets", [("q", "v"), ("qkv",), ("q", "k", "v", "proj", "fc1")])
def test_lora_formula(targets):
    bb = _tiny(f"lora:rank=2,alpha=4,targets=[{','.join(targets)}]")
    qkv = bb.model.blocks[0].attn.qkv
    x = _x()
    ups = iter(bb.extras["lora"])
    d = 32
    delta = torch.zeros(2, 17, 3 * d)
    for t in [t for t in targets if t in ("q", "k", "v", "qkv")]:
        u = next(ups)
        sl = slice(0, 3 * d) if t == "qkv" else slice("qkv".index(t) * d, ("qkv".index(t) + 1) * d)
        delta[..., sl] = 2.0 * (x @ u.lora_down.weight.t() @ u.lora_up.weight.t())  # alpha / rank = 2
    torch.testing.assert_close(qkv(x), F.linear(x, qkv.weight, qkv.bias) + delta)


def test_ssf_gradients_equal_the_plain_formula():
    from vpeft.methods.ssf import ScaleShift

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    scale = (1 + 0.1 * torch.randn(8, generator=g, dtype=torch.float64)).requires_grad_()
    shift = (0.1 * torch.randn(8, generator=g, dtype=torch.float64)).requires_grad_()
    torch.autograd.gradcheck(ScaleShift.apply, (x, scale, shift))
    w = torch.randn(3, 5, 8, generator=g, dtype=torch.float64)
    lean = torch.autograd.grad((ScaleShift.apply(x, scale, shift) * w).sum(), (x, scale, shift))
    plain = torch.autograd.grad(((x * scale + shift) * w).sum(), (x, scale, shift))
    for a, b in zip(lean, plain):
        torch.testing.assert_close(a, b)


def test_ssf_placements_on_vit():
    bb = _tiny("ssf")
    names = sorted(bb.extras["ssf"].keys())
    per_block = {"attn_qkv", "attn_proj", "norm1", "norm2", "mlp_fc1", "mlp_fc2"}
    assert names == sorted(["patch_embed", "norm"] + [f"blocks_{i}_{n}" for i in range(2) for n in per_block])


def test_vpt_prompts_sit_after_the_class_token_and_are_replaced_per_block():
    bb = _tiny("vpt_deep:length=3,dropout=0")
    prompts = bb.extras["vpt_deep"].vpt_prompts
    seen = []
    bb.model.blocks[1].register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    feats = bb.forward_features(torch.randn(2, 3, 32, 32))
    assert feats.shape[1] == 1 + 3 + 16 and bb.num_prefix_tokens == 4
    torch.testing.assert_close(seen[0][:, 1:4], prompts[1].expand(2, -1, -1))
    assert bb.forward_head(feats).shape == (2, 5)


def test_vpt_prompts_are_left_out_of_average_pooling():
    torch.manual_seed(0)
    bb = create_backbone(TINY, num_classes=5, pool="avg")
    apply_method(bb, "vpt_shallow:length=4,dropout=0")
    feats = bb.forward_features(torch.randn(2, 3, 32, 32))
    pooled = bb.model.forward_head(feats, pre_logits=True)
    torch.testing.assert_close(pooled, bb.model.fc_norm(feats[:, 5:].mean(1)))


FAMILIES = {"swin": TINY_SWIN, "convnext": TINY_CONVNEXT}
# Which methods must apply to which family (the rest must refuse with a clear reason).
APPLIES = {
    "swin": {"linear", "full", "bitfit", "adapter", "adaptformer", "adapter_ps", "lora", "ssf", "dtl", "dtl_plus"},
    "convnext": {"linear", "full", "bitfit", "ssf"},
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("name", methods_for("timm"))
def test_other_families_work_or_refuse_clearly(family, name):
    cls = METHODS.get(name)
    cfg = cls.from_dict(dict(cls.test_overrides))
    torch.manual_seed(0)
    bb = create_backbone(FAMILIES[family], num_classes=3)
    try:
        apply_method(bb, cfg)
    except ConfigError as e:
        assert name not in APPLIES[family], f"{name} should apply to {family}: {e}"
        assert f"method {name!r} does not apply to" in str(e) and ":" in str(e)
        return
    assert name in APPLIES[family], f"{name} unexpectedly applies to {family}: update APPLIES"
    x = torch.randn(2, 3, 32, 32)
    F.cross_entropy(bb(x), torch.tensor([0, 1])).backward()
    assert all(p.grad is not None for p in bb.parameters() if p.requires_grad)
    assert count_params(bb, exclude=head_param_names(bb)) == cfg.extra_trainable_count(bb)


def test_convnext_houlsby_adapter_applies():
    torch.manual_seed(0)
    bb = create_backbone(TINY_CONVNEXT, num_classes=3)
    apply_method(bb, "adapter:position=mlp")
    assert bb(torch.randn(1, 3, 32, 32)).shape == (1, 3)


@pytest.fixture(scope="module")
def memory_b2():
    from vpeft.measure import measure

    return {
        m: measure("vit_base_patch16_224", m, batch_size=2, timing=False)["saved_activation_bytes"]
        for m in ("full", "ssf", "lora", "dtl")
    }


def test_ssf_and_lora_are_memory_lean_on_vit_b(memory_b2):
    assert memory_b2["ssf"] <= 0.85 * memory_b2["full"], memory_b2
    assert memory_b2["lora"] <= 0.75 * memory_b2["full"], memory_b2


def test_dtl_memory_against_full_and_lora_on_vit_b(memory_b2):
    assert memory_b2["dtl"] <= 0.35 * memory_b2["full"], memory_b2
    assert memory_b2["dtl"] <= 0.55 * memory_b2["lora"], memory_b2


@pytest.mark.parametrize(
    "backbone,depth,dim", [("vit_small_patch16_224", 12, 384), ("vit_large_patch16_224", 24, 1024)]
)
@pytest.mark.parametrize("name", methods_for("timm"))
def test_vit_s_and_l_structure(backbone, depth, dim, name):
    """Every method applies to ViT-S/16 and ViT-L/16 (built on the meta device: shapes only, no memory)."""
    cls = METHODS.get(name)
    with torch.device("meta"):
        bb = create_backbone(backbone, num_classes=10)
        cfg = cls()
        apply_method(bb, cfg)
    assert len(bb.blocks) == depth and bb.embed_dim == dim
    assert count_params(bb, exclude=head_param_names(bb)) == cfg.extra_trainable_count(bb)
    # spot checks of the formulas at this width and depth
    expected = {
        "adapter": depth * (2 * dim * 4 + 4 + dim),
        "lora": depth * 2 * (8 * dim * 2),
        "vpt_deep": depth * 10 * dim,
        "fact_tt": 2 * dim * 8 + 12 * depth * 64,
    }
    if name in expected:
        assert cfg.extra_trainable_count(bb) == expected[name]
