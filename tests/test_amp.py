"""The GPU path on the CPU: bf16 autocast steps for every plug-in, low-precision kernels, device placement, and the
LoRA / FacT forward rewrites (outputs against a weight-space reference, op counts)."""

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from torch import nn

from vpeft import METHODS, OBJECTIVES, SELECTORS, ConfigError, apply_method, create_backbone
from vpeft.engine.optim import trainable_named_parameters
from vpeft.methods import methods_for

#: iDAT's teacher: small, two blocks (so methods with ``first_block=2`` apply to it as to the student).
TEACHER = "vit_tiny_patch16_224:img_size=32,patch_size=8,embed_dim=16,depth=2,num_heads=2"
OBJECTIVE_SPECS = {"idat": {"name": "idat", "teacher": TEACHER}}
BF16 = torch.bfloat16
#: The autocast dtypes of the recipes: bf16, and fp16 (GPS, DTL and DTL+ set ``amp: fp16``).
AMP = {"bf16": BF16, "fp16": torch.float16}
#: The objectives of a classifier's outputs (``seg`` trains mask logits: tests/test_segment_task.py).
OBJECTIVES_ON_LOGITS = [n for n in OBJECTIVES.names() if "segment" not in (getattr(OBJECTIVES.get(n), "tasks", ()))]


def _batch(n=4, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, classes, (n,), generator=g)


def _build(method="linear", objective="ce", selector=None, seed=0):
    """Backbone, method, objective, selector in the trainer's order; ConfigError where the library refuses a pair."""
    torch.manual_seed(seed)
    bb = create_backbone(TINY, num_classes=3)
    cls = METHODS.get(method)
    apply_method(bb, cls.from_dict(cls.test_overrides))
    obj = OBJECTIVES.build(OBJECTIVE_SPECS.get(objective, objective)).attach(bb)
    if selector is not None:
        sel = SELECTORS.get(selector).from_dict(getattr(SELECTORS.get(selector), "test_overrides", {}))
        sel.apply(bb, sel.structure_only(bb))
    return bb, obj


def _linear_output_dtypes(bb) -> list:
    """Records the dtype each of the backbone's own Linear layers hands on (after every method's hook)."""
    seen = []
    for m in bb.model.modules():
        if isinstance(m, nn.Linear) and m is not bb.head:
            m.register_forward_hook(lambda m, a, y: seen.append(y.dtype))
    return seen


def _amp_steps(method, objective, selector=None, dtype=BF16):
    try:
        bb, obj = _build(method, objective, selector)
    except ConfigError as e:
        pytest.skip(f"refused by the library: {e}")
    named = trainable_named_parameters(bb, obj)
    before = {n: p.detach().clone() for n, p in named}
    opt = torch.optim.Adam([p for _, p in named], lr=1e-2)  # scale-free: a small gradient still moves a tensor
    dtypes = _linear_output_dtypes(bb)
    x, y = _batch()
    bb.train(), obj.train()
    for step in range(2):  # zero-initialised factors (LoRA's B, FacT's V, DTL's up maps) pass gradients on at step 2
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype):
            out = obj(bb, x, y)
        assert torch.isfinite(out["loss"]), f"step {step}: loss {out['loss']}"
        out["loss"].backward()
        for n, p in named:
            assert p.grad is not None, f"step {step}: no gradient for {n}"
            assert p.grad.dtype == p.dtype, f"{n}: gradient in {p.grad.dtype}, parameter in {p.dtype}"
            assert torch.isfinite(p.grad).all(), f"step {step}: non-finite gradient for {n}"
        opt.step()
    unchanged = [n for n, p in named if torch.equal(p.detach(), before[n])]
    assert not unchanged, f"not trained: {unchanged}"
    # Under autocast a Linear computes in bf16 / fp16; a method must not promote what it hands on to fp32 (every later
    # op would then save fp32 activations).
    assert dtypes and set(dtypes) == {dtype}, f"Linear outputs in {sorted(map(str, set(dtypes)))}"


@pytest.mark.parametrize("objective", OBJECTIVES_ON_LOGITS)
@pytest.mark.parametrize("method", methods_for("timm"))
def test_bf16_autocast_step_for_every_method_and_objective(method, objective):
    _amp_steps(method, objective)


@pytest.mark.parametrize("amp", list(AMP))
@pytest.mark.parametrize("objective", OBJECTIVES_ON_LOGITS)
@pytest.mark.parametrize("selector", SELECTORS.names())
def test_autocast_step_for_every_selector(selector, objective, amp):
    _amp_steps("linear", objective, selector, AMP[amp])


@pytest.mark.parametrize("method", [n for n in methods_for("timm") if n.startswith("dtl")])
def test_fp16_autocast_step_for_dtl(method):  # the DTL and DTL+ recipes set amp: fp16
    _amp_steps(method, "ce", dtype=torch.float16)


# ---- low-precision kernels ------------------------------------------------------------------------------------------
def _grads(bb, x, y, amp):
    bb.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=BF16, enabled=amp):
        logits = bb(x)
    F.cross_entropy(logits, y).backward()
    return logits.float(), {n: p.grad.clone() for n, p in bb.named_parameters() if p.requires_grad}


def _close_in_norm(a, b, rel):
    return (a - b).norm() <= rel * b.norm()


@pytest.mark.parametrize("method,selector", [("ssf", None), ("linear", "gps")])
def test_autocast_gradients_match_fp32(method, selector):
    bb, _ = _build(method, selector=selector)
    x, y = _batch()
    with torch.no_grad():  # move the trainable tensors off their init so every gradient is informative
        for p in bb.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    ref_logits, ref = _grads(bb, x, y, amp=False)
    logits, got = _grads(bb, x, y, amp=True)
    assert _close_in_norm(logits, ref_logits, 0.05)
    for n in ref:
        assert got[n].dtype == ref[n].dtype == torch.float32
        assert _close_in_norm(got[n], ref[n], 0.1), n


def test_ssf_keeps_the_autocast_dtype():
    from vpeft.methods.ssf import ScaleShift

    bb, _ = _build("ssf")
    plain = create_backbone(TINY, num_classes=3)
    seen, plain_seen = {}, {}
    for model, record in ((bb.model, seen), (plain.model, plain_seen)):
        for name, m in model.named_modules():  # after SSF's hooks and forward overrides: the final outputs
            if isinstance(m, (nn.Linear, nn.LayerNorm)):
                m.register_forward_hook(lambda m, a, y, name=name, record=record: record.update({name: y.dtype}))
    x, _ = _batch()
    with torch.autocast("cpu", dtype=BF16):
        bb(x), plain(x)
    assert seen["blocks.0.attn.qkv"] == seen["blocks.0.mlp.fc1"] == BF16
    assert seen == plain_seen  # the LayerNorms with SSF folded in give what the plain norms give (fp32)
    # ScaleShift alone: output in x's dtype, parameter gradients in the parameters' dtype.
    x = torch.randn(3, 5, 8, dtype=BF16, requires_grad=True)
    scale = (1 + 0.1 * torch.randn(8)).requires_grad_()
    shift = (0.1 * torch.randn(8)).requires_grad_()
    out = ScaleShift.apply(x, scale, shift)
    assert out.dtype == BF16
    g = torch.randn_like(out)
    out.backward(g)
    assert x.grad.dtype == BF16 and scale.grad.dtype == shift.grad.dtype == torch.float32
    xd, gd = x.detach().double(), g.double()
    torch.testing.assert_close(scale.grad.double(), (gd * xd).sum((0, 1)), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(shift.grad.double(), gd.sum((0, 1)), rtol=1e-6, atol=1e-6)


def test_dtl_swish_is_finite_in_fp16():
    from vpeft.methods.dtl import swish

    beta = 100.0
    h64 = torch.tensor(
        [-700.0, -656.0, -3.0, -0.01, -1e-4, 0.0, 1e-4, 0.01, 0.02, 3.0, 656.0, 700.0], dtype=torch.float64
    )
    ref_h = h64.clone().requires_grad_()
    (ref_h * torch.sigmoid(beta * ref_h)).sum().backward()
    ref_out = (h64 * torch.sigmoid(beta * h64)).half().double()  # the reference rounded to fp16
    h = h64.half().requires_grad_()
    out = swish(h, beta)
    out.sum().backward()
    assert out.dtype == h.grad.dtype == torch.float16
    assert torch.isfinite(out).all() and torch.isfinite(h.grad).all(), (out, h.grad)
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(h.grad.double(), ref_h.grad, rtol=1e-3, atol=1e-3)


# ---- GPS: every selection and its indices on the model's device -----------------------------------------------------
def _fake_cuda(module, mode):
    """Replace every parameter and buffer of ``module`` by a fake CUDA tensor of ``mode`` (no GPU needed)."""
    for m in module.modules():
        for table in (m._parameters, m._buffers):
            for n, t in list(table.items()):
                if t is None:
                    continue
                fake = mode.from_tensor(t.detach(), static_shapes=True)
                with mode:
                    fake = fake.to("cuda")
                table[n] = nn.Parameter(fake, requires_grad=t.requires_grad) if table is m._parameters else fake


@pytest.fixture
def fake_cuda_model():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    bb, _ = _build()
    mode = FakeTensorMode(shape_env=ShapeEnv())  # the shape env lets level=net's nonzero run on fake tensors
    _fake_cuda(bb, mode)
    return bb, mode


@pytest.mark.parametrize("criterion", ["magnitude", "random"])
@pytest.mark.parametrize("level", ["neuron", "layer", "net"])
def test_gps_selection_lives_on_the_model_device(fake_cuda_model, level, criterion, monkeypatch):
    from vpeft.selectors import gps
    from vpeft.selectors.gps import GPSConfig, weight_sites

    # The authors' tie-break reads tied rows back to the host (once per selection), which fake tensors cannot do (it
    # writes its columns back with device=cols.device; tested by value in test_gps_fidelity.py). Here: torch.topk.
    monkeypatch.setattr(gps, "top_k_per_row", lambda s, k: (torch.topk(s, k, dim=1).indices, 0))
    bb, mode = fake_cuda_model
    cfg = GPSConfig(level=level, criterion=criterion)
    with mode:
        scores = cfg.scores(bb)
        selection = cfg.select(bb, scores)
    sites = weight_sites(bb)
    assert all(m.weight.device.type == "cuda" for m in sites.values())
    assert {s.device.type for s in scores.values()} == {"cuda"}
    assert {s.device.type for s in selection.values()} == {"cuda"}


def test_gps_applies_a_cpu_selection_to_a_model_on_another_device(fake_cuda_model):
    from vpeft.selectors.gps import GPSConfig, weight_sites

    cfg = GPSConfig(criterion="random")
    plain, _ = _build()
    selection = cfg.select(plain, cfg.scores(plain))  # on the CPU, as one reloaded from selection.safetensors
    bb, mode = fake_cuda_model
    selection = {n: mode.from_tensor(v) for n, v in selection.items()}
    assert {v.device.type for v in selection.values()} == {"cpu"}
    with mode:
        cfg.apply(bb, selection)
        for sv in bb.extras["gps"].values():
            assert {t.device.type for t in (sv.gps_index, sv.rows, sv.cols, sv.gps_values)} == {"cuda"}
        logits = bb(torch.randn(2, 3, 32, 32, device="cuda"))  # (fake tensors have no backward without a GPU)
    assert logits.device.type == "cuda"
    assert len(bb.extras["gps"]) == len(weight_sites(bb))


# ---- LoRA and FacT: the same outputs as the weight-space formula ----------------------------------------------------
def _perturb(bb, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every factor away from its (partly zero) init
        for p in bb.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def _hooked_and_weight_space(bb, deltas, x, y):
    """Logits and gradients of the method's own forward, then of the plain model with ``W + delta(params)``."""
    named = [(n, p) for n, p in bb.named_parameters() if p.requires_grad]
    bb.eval()
    logits = bb(x)
    got = torch.autograd.grad(F.cross_entropy(logits, y), [p for _, p in named])
    bb.remove_hooks()
    d = deltas()
    weights = {n: p + d[n] for n, p in bb.model.named_parameters() if n in d}
    ref_logits = torch.func.functional_call(bb.model, weights, (x,))
    ref = torch.autograd.grad(F.cross_entropy(ref_logits, y), [p for _, p in named], allow_unused=True)
    return logits, got, ref_logits, ref, [n for n, _ in named]


@pytest.mark.parametrize("targets", [["q", "v"], ["q", "k", "v"], ["qkv"], ["v"], ["q", "proj", "fc1"]])
def test_lora_equals_the_merged_weight(targets):
    torch.manual_seed(0)
    bb = create_backbone(TINY, num_classes=3)
    apply_method(bb, {"name": "lora", "rank": 2, "targets": targets, "alpha": 3.0})
    _perturb(bb)
    ups = iter(bb.extras["lora"])  # per block, per target in order

    d = bb.embed_dim
    where = {
        "q": ("attn.qkv", 0, d),
        "k": ("attn.qkv", d, 2 * d),
        "v": ("attn.qkv", 2 * d, 3 * d),
        "qkv": ("attn.qkv", 0, 3 * d),
        "proj": ("attn.proj", 0, d),
        "fc1": ("mlp.fc1", 0, 4 * d),
    }
    plan = [
        (f"blocks.{i}.{where[t][0]}.weight", where[t][1], where[t][2], next(ups))
        for i in range(len(bb.blocks))
        for t in targets
    ]

    def deltas():
        out = {}
        for key, lo, hi, upd in plan:
            w = bb.model.get_parameter(key)
            delta = torch.zeros_like(w).index_add(0, torch.arange(lo, hi), upd.lora_up.weight @ upd.lora_down.weight)
            out[key] = out.get(key, 0) + delta * 1.5  # alpha / rank
        return out

    x, y = _batch()
    logits, got, ref_logits, ref, names = _hooked_and_weight_space(bb, deltas, x, y)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    for n, a, b in zip(names, got, ref):
        torch.testing.assert_close(a, b if b is not None else torch.zeros_like(a), rtol=1e-4, atol=1e-6, msg=n)


def test_lora_in_place_update_stacks_safely_with_other_hooks():
    from vpeft.methods.ssf import ScaleShift

    torch.manual_seed(0)
    bb = create_backbone(TINY, num_classes=3)
    qkv = bb.model.blocks[0].attn.qkv
    # A hook before LoRA's that saves the layer's output for its backward (as SSF's ScaleShift does): LoRA's in-place
    # add into that output must make the backward fail, never silently use the changed values.
    one = torch.ones(qkv.out_features, requires_grad=True)
    bb.register_module_hook(qkv, post=lambda x, y: ScaleShift.apply(y, one, torch.zeros(qkv.out_features)))
    apply_method(bb, "lora:rank=2")
    _perturb(bb)
    x, y = _batch()
    loss = F.cross_entropy(bb(x), y)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("name", ["fact_tt", "fact_tk"])
def test_fact_equals_the_merged_weight(name):
    torch.manual_seed(0)
    bb = create_backbone(TINY, num_classes=3)
    apply_method(bb, {"name": name, "rank": 2, "scale": 3.0})
    _perturb(bb)
    shared = bb.extras[name]

    def deltas():
        out = {}
        for i in range(len(bb.blocks)):
            dw = shared.delta_weights(i, 3.0)
            for key, layer in (("qkv", "attn.qkv"), ("proj", "attn.proj"), ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2")):
                out[f"blocks.{i}.{layer}.weight"] = dw[key]
        return out

    x, y = _batch()
    logits, got, ref_logits, ref, names = _hooked_and_weight_space(bb, deltas, x, y)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    for n, a, b in zip(names, got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("name", ["fact_tt", "fact_tk"])
def test_fact_cores_never_outlive_their_forward(name):
    torch.manual_seed(0)
    bb = create_backbone(TINY, num_classes=3)
    apply_method(bb, {"name": name, "rank": 2})
    _perturb(bb)
    bb.eval()
    x1, y1 = _batch(seed=1)
    x2, y2 = _batch(seed=2)
    params = [p for p in bb.parameters() if p.requires_grad]

    def grads(*pairs):
        loss = sum(F.cross_entropy(bb(x), y) for x, y in pairs)
        return torch.autograd.grad(loss, params)

    # Two forwards of one model before one backward (GIST and iDAT run models more than once per step).
    for a, b, c in zip(grads((x1, y1), (x2, y2)), grads((x1, y1)), grads((x2, y2))):
        torch.testing.assert_close(a, b + c, rtol=1e-5, atol=1e-7)
    # A forward that stops early leaves its cores behind; the next forward, after the weights changed, does not use
    # them, nor cores built without autograd.
    with torch.no_grad():
        bb.model.forward_intermediates(x1, indices=[0], stop_early=True, intermediates_only=True)
        for p in params:
            p.mul_(1.5)
    logits = bb(x2)
    assert logits.grad_fn is not None
    expected = {"fact_tt": "cores", "fact_tk": "fact_c"}[name]
    g = dict(zip([n for n, p in bb.named_parameters() if p.requires_grad], torch.autograd.grad(logits.sum(), params)))
    assert any(expected in n and v.abs().sum() > 0 for n, v in g.items())
    torch.manual_seed(0)
    ref = create_backbone(TINY, num_classes=3)
    apply_method(ref, {"name": name, "rank": 2})
    ref.load_state_dict(bb.state_dict())
    torch.testing.assert_close(logits, ref.eval()(x2), rtol=0, atol=0)


def _count_ops(bb, x):
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    bb.eval()
    with torch.no_grad(), Count() as c:
        bb(x)
    return c.ops


def test_fact_builds_its_cores_once_per_forward():
    x, _ = _batch(n=1)
    torch.manual_seed(0)
    plain = _count_ops(create_backbone(TINY, num_classes=3), x)
    per_block = {}
    for name in ("fact_tt", "fact_tk"):
        torch.manual_seed(0)
        bb = create_backbone(TINY, num_classes=3)
        apply_method(bb, {"name": name, "rank": 2})
        ops = _count_ops(bb, x)
        per_block[name] = {k: (ops[k] - plain[k]) / len(bb.blocks) for k in ops}
    # Per block, matrix products: U x once per layer (4), x U @ core (6), V (6); FacT-TK also builds the block's
    # cores, C P for attention and for the MLP (2), once per forward rather than in each of the 6 updates.
    assert per_block["fact_tt"]["mm"] == 16
    assert per_block["fact_tk"]["mm"] == 18
    assert sum(per_block["fact_tk"].values()) - sum(per_block["fact_tt"].values()) <= 16


def test_lora_adds_into_the_slices_without_a_zero_block():
    x, _ = _batch(n=1)
    torch.manual_seed(0)
    plain = _count_ops(create_backbone(TINY, num_classes=3), x)
    torch.manual_seed(0)
    bb = create_backbone(TINY, num_classes=3)
    apply_method(bb, "lora:rank=2,targets=[q,v]")
    extra = _count_ops(bb, x) - plain
    assert extra["mm"] == 4 * len(bb.blocks)  # down and up for q and for v
    assert not {"cat", "new_zeros", "zeros", "zero_", "fill_"} & set(extra), extra


def test_lora_peft_benchmark_smoke(tmp_path):
    import importlib.util
    import json
    import sys
    from pathlib import Path

    pytest.importorskip("peft")
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))  # as `python benchmarks/lora_peft.py` does: the script imports _common
    try:
        spec = importlib.util.spec_from_file_location("bench_lora_peft", bench / "lora_peft.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        assert mod.main(["--smoke", "--out", str(tmp_path), "--batch-size", "2"]) == 0
    finally:
        sys.path.remove(str(bench))
    data = json.loads((tmp_path / "lora_peft.json").read_text())
    rows = {r["variant"]: r for r in data["rows"]}
    assert list(rows) == ["vpeft q,v", "vpeft qkv", "peft qkv"]
    assert len({r["trainable"] for r in rows.values()}) == 1  # the same rank on the same layers: equal counts
    assert all(r["median_ms"] > 0 for r in rows.values()) and rows["peft qkv"]["ratio_to_peft"] == 1.0
    assert "| vpeft q,v |" in (tmp_path / "lora_peft.md").read_text()
