import pytest
import torch
from conftest import TINY, TINY_CONVNEXT, TINY_SWIN, make_task

from vpeft import apply_method, create_backbone
from vpeft.methods.base import count_params, head_param_names
from vpeft.selectors.gps import GPSConfig, supcon_loss, weight_sites


@pytest.mark.parametrize("k,count", [(1, 167_424), (2, 167_424 + 83_712), (3, 167_424 + 2 * 83_712)])
def test_vit_b_counts(k, count):
    with torch.device("meta"):
        bb = create_backbone("vit_base_patch16_224", num_classes=10)
        apply_method(bb, "linear")
        cfg = GPSConfig(k=k, criterion="magnitude")
        cfg.apply(bb, cfg.select(bb, cfg.scores(bb)))
    assert count_params(bb, exclude=head_param_names(bb)) == count


def _task(tmp_path, size=32):
    from vpeft.data.vtab import load_split

    root = make_task(tmp_path / "t", n_train=16, n_test=4, num_classes=3, size=size)
    return load_split(root, "train800", (size, size))


def _model(spec=TINY, seed=0):
    torch.manual_seed(seed)
    bb = create_backbone(spec, num_classes=3)
    apply_method(bb, "linear")
    return bb


@pytest.mark.parametrize("spec", [TINY, TINY_SWIN, TINY_CONVNEXT], ids=["vit", "swin", "convnext"])
@pytest.mark.parametrize("loss", ["supcon", "ce"])
def test_selection_is_the_top_k_per_neuron_for_every_weight_kind(tmp_path, spec, loss):
    ds = _task(tmp_path)
    bb = _model(spec)
    cfg = GPSConfig(k=2, loss=loss)
    scores = cfg.scores(bb, ds, batch_size=8)
    sites = weight_sites(bb)
    assert set(scores) == set(sites) and all(s.abs().sum() > 0 for s in scores.values())
    selection = cfg.select(bb, scores)
    kinds = set()
    for name, m in sites.items():
        s = scores[name].reshape(m.weight.shape[0], -1)
        idx = selection[name]
        rows, cols = idx // s.shape[1], idx % s.shape[1]
        assert torch.equal(torch.bincount(rows, minlength=s.shape[0]), torch.full((s.shape[0],), 2))
        for r in range(s.shape[0]):  # brute force: the chosen columns hold the two largest scores of the row
            chosen = sorted(s[r, cols[rows == r]].tolist(), reverse=True)
            assert chosen == sorted(s[r].tolist(), reverse=True)[:2], (name, r)
        kinds.add((type(m).__name__, getattr(m, "groups", 1) > 1))
    if spec == TINY_CONVNEXT:
        assert ("Conv2d", True) in kinds  # depthwise convolutions too
    cfg.apply(bb, selection)
    x = torch.randn(2, 3, 32, 32)
    torch.nn.functional.cross_entropy(bb(x), torch.tensor([0, 1])).backward()
    assert all(p.grad is not None for p in bb.parameters() if p.requires_grad)


@pytest.mark.parametrize("level", ["layer", "net"])
def test_layer_and_net_levels_keep_k_times_rows(level):
    bb = _model()
    cfg = GPSConfig(k=2, criterion="random", level=level)
    sel = cfg.select(bb, cfg.scores(bb))
    sites = weight_sites(bb)
    total = sum(len(v) for v in sel.values())
    assert total == 2 * sum(m.weight.shape[0] for m in sites.values())
    if level == "layer":
        assert all(len(sel[n]) == 2 * m.weight.shape[0] for n, m in sites.items())


def test_sparse_training_equals_the_dense_masked_reference():
    # float64: in float32 Adam's g / sqrt(v) turns the summation-order noise of near-zero gradients into visible
    # differences; in float64 the two algorithms must agree to the tolerance.
    bb = _model().double()
    cfg = GPSConfig(k=1, criterion="random", seed=3)
    sel = cfg.select(bb, cfg.scores(bb))
    ref = _model().double()  # same seed: same weights
    cfg.apply(bb, sel)
    # Dense reference, as the official code: everything requires grad, masked gradients zeroed, Adam with wd 0.
    masks = {}
    for name, m in weight_sites(ref).items():
        mask = torch.zeros(m.weight.numel(), dtype=torch.bool)
        mask[sel[name]] = True
        masks[m.weight] = mask.view_as(m.weight)
    trainable_ref = {id(p) for p in ref.head.parameters()}
    trainable_ref |= {id(m.bias) for m in weight_sites(ref).values() if m.bias is not None}
    for p in ref.parameters():
        p.requires_grad_(True)
    opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-2, weight_decay=0)
    opt = torch.optim.Adam([p for p in bb.parameters() if p.requires_grad], lr=1e-2, weight_decay=0)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x, y = torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64), torch.randint(0, 3, (4,), generator=g)
        for model, o in ((bb, opt), (ref, opt_ref)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
        for p in ref.parameters():
            if p in masks:
                p.grad[~masks[p]] = 0
            elif id(p) not in trainable_ref:
                p.grad.zero_()
        opt.step(), opt_ref.step()
    sites, ref_sites = weight_sites(bb), weight_sites(ref)
    for name, m in sites.items():
        sv = bb.extras["gps"][name.replace(".", "_")]
        torch.testing.assert_close(m.weight + sv.dense(m.weight), ref_sites[name].weight, rtol=0, atol=1e-6)
        torch.testing.assert_close(m.bias, ref_sites[name].bias, rtol=0, atol=1e-6)
    torch.testing.assert_close(bb.head.weight, ref.head.weight, rtol=0, atol=1e-6)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(bb.eval()(x), ref.eval()(x), rtol=1e-6, atol=1e-6)


def test_supcon_by_hand():
    import math

    f = torch.nn.functional.normalize(
        torch.tensor(
            [[[1.0, 0.0], [0.8, 0.6]], [[0.0, 1.0], [0.6, 0.8]], [[1.0, 1.0], [-1.0, 0.0]]], dtype=torch.float64
        ),
        dim=-1,
    )
    y = torch.tensor([0, 1, 0])
    T = 0.5
    feats = torch.cat([f[:, 0], f[:, 1]]).tolist()
    labels = y.repeat(2).tolist()
    total = 0.0
    for i in range(6):
        sims = {j: sum(a * b for a, b in zip(feats[i], feats[j])) / T for j in range(6) if j != i}
        denom = math.log(sum(math.exp(v) for v in sims.values()))
        pos = [j for j in sims if labels[j] == labels[i]]
        total += -sum(sims[j] - denom for j in pos) / len(pos)
    assert supcon_loss(f, y, T).item() == pytest.approx(total / 6, rel=1e-12)


def test_run_checkpoint_is_small_and_rebuilds(small_task, tmp_path, capsys):
    import json

    from safetensors.torch import load_file

    from vpeft.cli import main

    out = tmp_path / "gps"
    assert (
        main(
            [
                "train",
                "--data",
                str(small_task),
                "--backbone",
                TINY,
                "--method",
                "linear",
                "--selector",
                "gps",
                "--epochs",
                "2",
                "--batch-size",
                "8",
                "--out",
                str(out),
                "--no-progress",
                "train.optimizer=adam",
                "train.weight_decay=0",
            ]
        )
        == 0
    )
    sd = load_file(str(out / "trainable.safetensors"))
    result = json.loads((out / "result.json").read_text())
    n_selected = result["selection"]["selected"]
    values = sum(v.numel() for k, v in sd.items() if k.endswith("gps_values"))
    index = sum(v.numel() for k, v in sd.items() if k.endswith("gps_index"))
    assert values == index == n_selected == 608
    assert not any(k.endswith(".weight") and "head" not in k for k in sd)  # no dense weights
    assert (out / "trainable.safetensors").stat().st_size < 12 * (values + result["trainable_params"]) + 8000
    capsys.readouterr()
    assert main(["eval", "--run", str(out)]) == 0
    assert "(same)" in capsys.readouterr().out
    merged = tmp_path / "m.safetensors"
    assert main(["merge", "--run", str(out), "--out", str(merged)]) == 0


def test_merge_folds_the_selected_values():
    import timm

    from vpeft import merge

    bb = _model()
    cfg = GPSConfig(criterion="random")
    cfg.apply(bb, cfg.select(bb, cfg.scores(bb)))
    with torch.no_grad():
        for p in bb.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(2, 3, 32, 32)
    bb.eval()
    expected = bb(x)
    model = merge(bb)
    plain = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=3
    )
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(plain.eval()(x), expected, rtol=1e-5, atol=1e-5)


def test_vit_b_memory_is_lean():
    from vpeft.measure import measure

    full = measure("vit_base_patch16_224", "full", batch_size=1, timing=False)
    gps = measure("vit_base_patch16_224", "linear", batch_size=1, timing=False, selector="gps:k=1")
    assert gps["trainable_no_head"] == 167_424
    assert gps["optimizer_state_bytes"] < 0.01 * full["optimizer_state_bytes"]
    assert gps["train_memory_bytes"] <= full["train_memory_bytes"] - full["optimizer_state_bytes"]


def test_corrupt_checkpoint_of_a_gps_run_is_a_clear_error(small_task, tmp_path, capsys):
    from vpeft.cli import main

    out = tmp_path / "gps"
    assert (
        main(
            [
                "train",
                "--data",
                str(small_task),
                "--backbone",
                TINY,
                "--method",
                "linear",
                "--selector",
                "gps",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    (out / "trainable.safetensors").write_bytes(b"garbage")
    capsys.readouterr()
    assert main(["eval", "--run", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "trainable.safetensors" in err and "Traceback" not in err
