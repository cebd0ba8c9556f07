import pytest
import torch
import yaml

from vpeft import ConfigError, MultiTask, apply_method, create_backbone
from vpeft.methods.base import count_params, head_param_names
from vpeft.methods.dtl import swish

SPEC4 = "vit_tiny_patch16_224:img_size=32,patch_size=8,embed_dim=32,depth=4,num_heads=2"


@pytest.mark.parametrize(
    "spec,count",
    [("dtl", 36_864), ("dtl_plus:kernel=3", 43_776), ("dtl_plus:kernel=4", 49_152), ("dtl_plus:kernel=5", 56_064)],
)
def test_vit_b_counts(spec, count):
    with torch.device("meta"):
        bb = create_backbone("vit_base_patch16_224", num_classes=10)
        apply_method(bb, spec)
    assert count_params(bb, exclude=head_param_names(bb)) == count


def _model(method, seed=0):
    torch.manual_seed(seed)
    bb = create_backbone(SPEC4, num_classes=5)
    apply_method(bb, method)
    with torch.no_grad():  # move B off zero so the side path matters
        for p in bb.extras["dtl"].parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return bb.eval()


@pytest.mark.parametrize("method", ["dtl:first_block=3", "dtl_plus:first_block=3,kernel=3"])
def test_forward_equals_the_papers_formula(method):
    bb = _model(method)
    side, m = bb.extras["dtl"], bb.model
    x = torch.randn(2, 3, 32, 32)
    t = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))
    h = 0
    for i, blk in enumerate(m.blocks):
        h = h + side.dtl_up[str(i)](side.dtl_down[str(i)](t))  # h += B_i A_i (input of block i), all tokens
        t = blk.forward(t)  # the block alone, without the side-network hooks
        if i >= 2:  # M = 3, 1-indexed
            g = h * torch.sigmoid(100 * h)
            if side.dtl_conv is not None:  # DTL+: depthwise conv on the 4 x 4 patch grid; the class token skips it
                grid = g[:, 1:].transpose(1, 2).reshape(2, 32, 4, 4)
                g = torch.cat([g[:, :1], side.dtl_conv(grid).flatten(2).transpose(1, 2)], 1)
            t = t + g
    # classifier: mean of the patch tokens, then the frozen final norm
    expected = m.head(m.fc_norm(t[:, 1:].mean(1)))
    torch.testing.assert_close(bb(x), expected)


def test_swish_beta_and_its_gradient():
    h = torch.tensor([-1.0, 0.0, 0.01, 2.0, -0.003], dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(swish(h, 100.0), h * torch.sigmoid(100 * h))
    torch.autograd.gradcheck(lambda t: swish(t, 100.0), (h,))


def test_blocks_before_m_store_nothing_and_get_no_gradient():
    bb = _model("dtl:first_block=3").train()
    saved = {i: 0 for i in range(4)}
    current = {"i": None}
    for i, blk in enumerate(bb.model.blocks):  # attribute saved tensors to the block's own forward (not the hooks)
        orig = blk.forward

        def fwd(*a, i=i, orig=orig, **k):
            current["i"] = i
            try:
                return orig(*a, **k)
            finally:
                current["i"] = None

        blk.forward = fwd

    def pack(t):
        if current["i"] is not None:
            saved[current["i"]] += t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = bb(torch.randn(2, 3, 32, 32))
    # Blocks 1 and 2 (before M = 3) keep nothing, nor does block M itself: its input needs no gradient either; the
    # first injection after it makes block 4's input need one.
    assert saved[0] == 0 and saved[1] == 0 and saved[2] == 0, saved
    assert saved[3] > 0
    out.sum().backward()
    side = bb.extras["dtl"]
    assert all(side.dtl_down[str(i)].weight.grad.abs().sum() > 0 for i in range(4))


def test_memory_falls_as_m_grows():
    from vpeft.measure import measure

    rows = [
        measure(SPEC4, f"dtl:first_block={m}", batch_size=2, timing=False)["saved_activation_bytes"]
        for m in (1, 2, 3, 4)
    ]
    assert rows == sorted(rows, reverse=True) and rows[0] > rows[-1]


def test_checkpointing_gives_the_same_result_with_less_memory():
    from vpeft.measure import SavedTensorProbe

    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 3])
    grads, saved = [], []
    for ck in (False, True):
        bb = _model(f"dtl:first_block=2,checkpoint={str(ck).lower()}").train()
        with SavedTensorProbe(bb) as probe:
            loss = torch.nn.functional.cross_entropy(bb(x), y)
        loss.backward()
        saved.append(probe.bytes)
        grads.append({n: p.grad.clone() for n, p in bb.named_parameters() if p.requires_grad})
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k])
    assert saved[1] < saved[0]


def test_swin_restarts_h_per_stage_and_convnext_is_refused():
    from conftest import TINY_CONVNEXT, TINY_SWIN

    torch.manual_seed(0)
    bb = create_backbone(TINY_SWIN, num_classes=3)
    apply_method(bb, "dtl")
    side = bb.extras["dtl"]
    assert side.blocks == [1] and side.stage_starts == {0, 1}  # stage 1 never reaches an injection: no map there
    assert bb(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    bb = create_backbone(TINY_CONVNEXT, num_classes=3)
    with pytest.raises(ConfigError, match="method 'dtl' does not apply to ConvNeXt"):
        apply_method(bb, "dtl")


def _write_run(root, name, method, num_classes, seed_shift):
    """A DTL run directory with random trained-looking tensors (no training needed for an equality check)."""
    import yaml

    from vpeft.config import RunConfig
    from vpeft.engine.checkpoint import save_trainable
    from vpeft.run import build_model

    cfg = RunConfig.from_dict(
        {"backbone": {"spec": SPEC4}, "method": method, "data": {"num_classes": num_classes}, "train": {"seed": 0}}
    )
    model, obj = build_model(cfg, num_classes)
    g = torch.Generator().manual_seed(seed_shift)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    out = root / name
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    save_trainable(out / "trainable.safetensors", model)
    return out, model.eval()


def test_multitask_equals_separate_models(tmp_path):
    methods = ["dtl:first_block=3", "dtl_plus:first_block=3,kernel=3", "dtl:first_block=2", "dtl:first_block=4"]
    runs, models = zip(*[_write_run(tmp_path, f"t{i}", m, 3 + i, i) for i, m in enumerate(methods)])
    mt = MultiTask(list(runs))
    assert mt.first == 1 and mt.names == ["t0", "t1", "t2", "t3"]
    x = torch.randn(3, 3, 32, 32)
    outs = mt(x)
    with torch.no_grad():
        for out, model in zip(outs, models):
            torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)


def test_multitask_refuses_mixed_runs(tmp_path):
    a, _ = _write_run(tmp_path, "a", "dtl", 3, 0)
    b, _ = _write_run(tmp_path, "b", "lora:rank=2", 3, 1)
    with pytest.raises(ConfigError, match="needs dtl or dtl_plus"):
        MultiTask([a, b])


def test_predict_command(tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    from vpeft.cli import main

    runs = [str(_write_run(tmp_path, f"t{i}", "dtl", 4, i)[0]) for i in range(2)]
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(img)
    assert main(["predict", "--runs", *runs, "--images", str(img)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["image"] == str(img) and set(rows[0]["predictions"]) == {"t0", "t1"}


def test_predict_prepares_images_as_eval_does(tmp_path, capsys):
    """A run on an augmented layout (fgvc) is evaluated on the centre crop of a larger decode: predict must match."""
    import json

    import numpy as np
    from PIL import Image

    from vpeft.cli import main
    from vpeft.config import DataConfig
    from vpeft.data.sources import load
    from vpeft.data.vtab import normalize

    run, model = _write_run(tmp_path, "fg", "dtl", 5, 3)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"]["format"] = "fgvc"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"{i}.png" for i in range(6)]
    for n in names:
        Image.fromarray(rng.integers(0, 256, (48, 60, 3), dtype=np.uint8)).save(data / "images" / n)
    (data / "test.json").write_text(json.dumps({n: 0 for n in names}))
    ds = load(DataConfig(root=str(data), format="fgvc"), "test", (32, 32), 5, training=False)
    with torch.no_grad():
        want = model(normalize(ds.images, cfg["data"]["normalize"])).argmax(-1).tolist()
    assert main(["predict", "--runs", str(run), "--images", *[str(data / "images" / n) for n in names]]) == 0
    got = [json.loads(line)["predictions"]["fg"] for line in capsys.readouterr().out.splitlines()]
    assert got == want
    other, _ = _write_run(tmp_path, "plain", "dtl", 5, 4)  # a vtab1k run: resized, not cropped
    with pytest.raises(ConfigError, match="preprocess their images differently"):
        from vpeft.cli import cmd_predict

        cmd_predict(type("A", (), {"runs": [str(run), str(other)], "device": "cpu", "images": [], "batch_size": 8}))


def test_multitask_missing_checkpoint_is_a_clear_error(tmp_path):
    from vpeft.errors import CheckpointError

    a, _ = _write_run(tmp_path, "a", "dtl", 3, 0)
    (a / "trainable.safetensors").unlink()
    with pytest.raises(CheckpointError, match="trainable.safetensors does not exist"):
        MultiTask([a])
