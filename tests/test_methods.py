"""Every registered method, on the tiny ViT: the properties STYLE.md lists, from the registry alone."""

import pytest
import torch
from conftest import TINY

from vpeft import METHODS, apply_method, create_backbone, load_trainable, save_trainable, trainable_state_dict
from vpeft.methods import methods_for
from vpeft.methods.base import count_params, head_param_names

NAMES = methods_for("timm")


def build(name, seed=0, num_classes=5, spec=TINY, **overrides):
    cls = METHODS.get(name)
    cfg = cls.from_dict({**cls.test_overrides, **overrides})
    torch.manual_seed(seed)
    bb = create_backbone(spec, num_classes=num_classes)
    plain = [(p, p.detach().clone()) for p in bb.parameters()]  # the backbone's own tensors, by identity
    apply_method(bb, cfg)
    return bb, cfg, plain


def batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 5, (n,), generator=g)


def sgd_steps(bb, steps=3):
    params = [p for p in bb.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.5)
    x, y = batch()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(bb(x), y).backward()
        opt.step()


@pytest.mark.parametrize("name", NAMES)
def test_identity_init(name):
    cls = METHODS.get(name)
    if not cls.identity_init and cls.identity_overrides is None:
        pytest.skip("not identity-initialised")
    torch.manual_seed(0)
    plain = create_backbone(TINY, num_classes=5)
    bb, _, _ = build(name, **({} if cls.identity_init else cls.identity_overrides))
    x, _ = batch()
    torch.testing.assert_close(bb.eval()(x), plain.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_only_trainable_tensors_change(name):
    bb, cfg, plain = build(name)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    sgd_steps(bb)
    after = bb.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed <= trainable, f"frozen tensors changed: {sorted(changed - trainable)}"
    assert head_param_names(bb) <= changed, "the head did not train"
    if not cfg.trains_backbone:  # methods that add modules leave every backbone tensor as it was
        head = {id(p) for p in bb.head.parameters()}
        for p, v in plain:
            assert id(p) in head or torch.equal(p, v), "a backbone tensor changed"


@pytest.mark.parametrize("name", NAMES)
def test_every_trainable_tensor_gets_a_gradient(name):
    bb, _, _ = build(name)
    sgd_steps(bb, steps=1)  # zero-initialised factors (LoRA's B, FacT's V) pass gradients on after one step
    bb.zero_grad(set_to_none=True)
    x, y = batch()
    torch.nn.functional.cross_entropy(bb(x), y).backward()
    for n, p in bb.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {n}"
        else:
            assert p.grad is None, f"frozen {n} got a gradient"


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_roundtrip_is_exact_and_trainable_only(name, tmp_path):
    bb, _, _ = build(name)
    sgd_steps(bb)
    path = tmp_path / "trainable.safetensors"
    save_trainable(path, bb)
    from safetensors.torch import load_file

    saved = load_file(str(path))
    frozen = {n for n, p in bb.named_parameters() if not p.requires_grad}
    assert not (set(saved) & frozen), "a frozen tensor is in the checkpoint"
    assert set(saved) == set(trainable_state_dict(bb))
    fresh, _, _ = build(name)  # same seed: same frozen weights, untrained method
    x, _ = batch(seed=1)
    load_trainable(path, fresh)
    torch.testing.assert_close(fresh.eval()(x), bb.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_trainable_count_matches_formula(name):
    bb, cfg, _ = build(name)
    head = head_param_names(bb)
    assert count_params(bb, exclude=head) == cfg.extra_trainable_count(bb)
    assert count_params(bb) == cfg.extra_trainable_count(bb) + sum(p.numel() for p in bb.head.parameters())


MERGEABLE = [n for n in NAMES if METHODS.get(n).mergeable]


@pytest.mark.parametrize("name", MERGEABLE)
def test_merge_gives_a_plain_timm_model_with_the_same_outputs(name):
    import timm

    from vpeft import merge

    bb, _, _ = build(name)
    sgd_steps(bb)  # move every factor away from its init so the merge has something to fold
    x, _ = batch(seed=2)
    bb.eval()
    with torch.no_grad():
        expected = bb(x)
    model = merge(bb)
    assert type(model).__module__.startswith("timm.")
    plain = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5
    )
    assert set(model.state_dict()) == set(plain.state_dict()), "merged model has extra or missing tensors"
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()), "hooks left behind"
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), expected, rtol=1e-5, atol=1e-5)
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), expected, rtol=1e-5, atol=1e-5)


def test_unmergeable_methods_refuse_clearly():
    from vpeft import ConfigError, merge

    for name in NAMES:
        if not METHODS.get(name).mergeable:
            bb, _, _ = build(name)
            with pytest.raises(ConfigError, match="cannot be merged"):
                merge(bb)
