"""The backbones shipped in the package (vpeft.zoo) and the demo that uses them."""

import json

import pytest
import torch
from safetensors.torch import load_file

from vpeft.backbones import create_backbone
from vpeft.errors import CheckpointError
from vpeft.zoo import ZOO, timm_model


@pytest.mark.parametrize("name", sorted(ZOO))
def test_shipped_backbone_loads_its_weights(name):
    entry = ZOO[name]
    assert entry.file.is_file(), f"{entry.file} missing: run python benchmarks/pretrain_c10.py"
    weights = load_file(str(entry.file))
    bb = create_backbone(name, num_classes=5)
    state = bb.model.state_dict()
    assert all(torch.equal(state[k], v.float()) for k, v in weights.items())  # every tensor (float16 in the file)
    assert not any(k.startswith("head.") for k in weights)  # no CIFAR head shipped
    assert bb.model.head.out_features == 5 and bb.input_size == (32, 32)
    torch.manual_seed(0)
    random = timm_model(name, num_classes=0)
    assert not torch.equal(random.state_dict()["blocks.0.attn.qkv.weight"], weights["blocks.0.attn.qkv.weight"].float())
    # Options on top of the entry's (drop-path here) keep the weights.
    dp = create_backbone(f"{name}:drop_path_rate=0.1", num_classes=3)
    assert torch.equal(dp.model.state_dict()["blocks.5.mlp.fc2.weight"], weights["blocks.5.mlp.fc2.weight"].float())


def test_shipped_weights_are_small():
    total = sum(e.file.stat().st_size for e in ZOO.values())
    assert total < 16 * 2**20


def test_missing_weights_name_the_file(tmp_path, monkeypatch):
    import vpeft.zoo as zoo

    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match=str(tmp_path / "vit_c10_small.safetensors")):
        create_backbone("vit_c10_small", num_classes=2)


def test_pretrained_features_beat_random_on_a_generated_task(synth_root):
    """A linear probe on the shipped weights learns the 'shapes' task better than one on random weights."""
    from vpeft.config import RunConfig
    from vpeft.engine.trainer import train

    accs = {}
    for label, ckpt in (("shipped", None), ("random", "random")):
        spec = (
            "vit_c10_small"
            if ckpt is None
            else "vit_tiny_patch16_224:" + ",".join(f"{k}={v}" for k, v in ZOO["vit_c10_small"].kwargs.items())
        )
        cfg = RunConfig.from_dict(
            {
                "backbone": {"spec": spec},
                "method": "linear",
                "data": {"root": str(synth_root / "shapes")},
                "train": {"epochs": 3, "batch_size": 64, "lr": 0.01},
            }
        )
        accs[label] = train(cfg, synth_root.parent / f"probe-{label}", overwrite=True, progress=False)["test_acc"]
    assert accs["shipped"] > accs["random"] + 5, accs


def test_demo_runs_and_reruns_identically(tmp_path, monkeypatch, capsys):
    import vpeft.demo as demo

    monkeypatch.setattr(demo, "DEMO_RUNS", [r for r in demo.DEMO_RUNS if r[0] in ("linear", "adapter_ps+gist")])
    rows = demo.run_demo(tmp_path, epochs=1, progress=False)
    out = capsys.readouterr().out
    assert "vit_c10_base" in out and "adapter_ps+gist" in out
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    again = demo.run_demo(tmp_path / "again", epochs=1, progress=False)
    assert [r["test_acc"] for r in rows] == [r["test_acc"] for r in again]
    assert json.loads((tmp_path / "summary.json").read_text())[1]["objective"] == "gist"


def test_package_data_ships_weights_and_recipes():
    """The wheel must carry the weights and the recipes (pyproject package-data), not only the source tree."""
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["vpeft"]
    shipped = {p for g in globs for p in (root / "vpeft").glob(g)}
    needed = set((root / "vpeft" / "weights").glob("*.safetensors")) | set(
        (root / "vpeft" / "bench" / "recipes").glob("*.yaml")
    )
    assert needed and needed <= shipped
