"""The tiny SAM shipped in the package (``sam:tiny_synth``, benchmarks/pretrain_sam.py): its weights load strictly,
into vpeft's model and into segment-anything's own ``Sam``; decoder-only training from them beats the same from
random weights; the file stays small; ``vpeft list backbones`` names it; ``vpeft demo --suite seg`` runs on it."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_sam_reference

pytest.importorskip("segment_anything", reason="the SAM family needs the sam extra: pip install 'vpeft[sam]'")

from safetensors import safe_open  # noqa: E402

from vpeft.backbones import create_backbone, read_state_dict  # noqa: E402
from vpeft.cli import main  # noqa: E402
from vpeft.config import RunConfig  # noqa: E402
from vpeft.data.synth_seg import generate_seg  # noqa: E402
from vpeft.engine.trainer import train, weights_source  # noqa: E402
from vpeft.errors import CheckpointError  # noqa: E402
from vpeft.families.sam import SHIPPED, official_checkpoint, official_state_dict  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FILE = SHIPPED["tiny_synth"].file


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    """The tests' generated segmentation task (seed 0, 32 px: other images than the pretraining set's)."""
    return generate_seg(tmp_path_factory.mktemp("seg"), n_test=40)


def test_shipped_weights_load_strictly_as_the_whole_model():
    assert FILE.is_file(), f"{FILE} missing: run python benchmarks/pretrain_sam.py"
    sd = read_state_dict(FILE)
    bb = create_backbone("sam:tiny_synth", 1)
    state = bb.model.state_dict()
    # Every tensor of the model, encoder and decoder alike, is the file's (official layout, strict).
    assert official_state_dict(sd, bb.model).keys() == state.keys()
    assert all(torch.equal(state[k], v) for k, v in official_state_dict(sd, bb.model).items())
    assert any(k.startswith("image_encoder.blocks.") for k in sd) and "mask_decoder.iou_token.weight" in sd
    assert torch.equal(state["head.no_mask_embed.weight"], sd["prompt_encoder.no_mask_embed.weight"])
    assert bb.input_size == (64, 64)
    # The same architecture as sam:tiny, and --checkpoint on sam:tiny loads the same weights.
    same = create_backbone("sam:tiny", 1, checkpoint=FILE).model.state_dict()
    assert all(torch.equal(same[k], v) for k, v in state.items())
    # Not random: the shipped name differs from sam:tiny's initialisation.
    torch.manual_seed(0)
    rand = create_backbone("sam:tiny", 1).model.state_dict()
    assert not torch.equal(rand["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])
    assert not torch.equal(rand["head.mask_decoder.iou_token.weight"], state["head.mask_decoder.iou_token.weight"])
    assert weights_source(RunConfig.from_dict({"backbone": {"spec": "sam:tiny_synth"}}).backbone) == "shipped"


def test_shipped_file_is_an_official_sam_checkpoint_segment_anything_loads():
    """segment-anything's own Sam at the tiny sizes loads the file strictly and predicts the same mask logits."""
    sam = tiny_sam_reference()
    sam.load_state_dict(read_state_dict(FILE), strict=True)
    ours = create_backbone("sam:tiny_synth", 1).eval()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        emb = sam.image_encoder(x)
        sparse, dense = sam.prompt_encoder(None, None, None)  # no prompt: the learned no-mask embedding
        ref = torch.cat(
            [
                sam.mask_decoder(emb[i : i + 1], sam.prompt_encoder.get_dense_pe(), sparse, dense, False)[0]
                for i in range(len(x))
            ]
        )
        ref = F.interpolate(ref, (64, 64), mode="bilinear", align_corners=False)
        got = ours(x)
    assert got.shape == ref.shape == (3, 1, 64, 64)
    assert (got - ref).abs().max() < 1e-4 * ref.abs().max()  # float32 rounding of two implementations


def test_official_checkpoint_round_trips_and_leaves_the_random_state():
    torch.manual_seed(3)
    model = create_backbone("sam:tiny", 1).model
    before = torch.random.get_rng_state()
    ck = official_checkpoint(model, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)
    back = official_state_dict(ck, model)
    assert back.keys() == model.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())
    # The unused prompt tensors are segment-anything's initialisation, drawn from the seed.
    again = official_checkpoint(model, seed=5)
    key = "prompt_encoder.point_embeddings.0.weight"
    assert torch.equal(ck[key], again[key]) and not torch.equal(ck[key], official_checkpoint(model, seed=6)[key])


def test_shipped_weights_file_is_small_and_records_its_pretraining():
    assert FILE.stat().st_size < 1 * 2**20  # 357 KiB: float32, 85k parameters
    with safe_open(str(FILE), "pt") as f:
        meta = f.metadata()
    record = json.loads((ROOT / "benchmarks" / "results" / "pretrain_sam.json").read_text())
    assert meta["recipe"] == "benchmarks/pretrain_sam.py" and float(meta["val_dice"]) == round(record["val_dice"], 4)
    assert json.loads(meta["data"]) == record["data"]
    # Its own generated set: another seed than the tests' and the demo's (0), and more images.
    assert record["data"]["seed"] not in (0, 1, 2) and record["data"]["n_train"] >= 3000
    assert record["file_bytes"] == FILE.stat().st_size and record["val_dice"] > 95


def test_an_unknown_sam_name_lists_the_sizes_and_the_shipped_models():
    from vpeft.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\(valid: vit_b, vit_l, vit_h, tiny\); with shipped weights: tiny_synth"):
        create_backbone("sam:tiny_synthetic", 1)


def test_missing_shipped_weights_name_the_file(tmp_path, monkeypatch):
    import vpeft.zoo as zoo

    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match=r"sam_tiny_synth\.safetensors.*pretrain_sam\.py"):
        create_backbone("sam:tiny_synth", 1)


def test_list_backbones_names_the_shipped_sam(capsys):
    assert main(["list", "backbones"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("sam:tiny_synth: "))
    assert "generated" in line and "[weights missing]" not in line
    assert "sam:tiny with vpeft/weights/sam_tiny_synth.safetensors" in out


def _linear(seg, out, checkpoint=None, spec="sam:tiny_synth"):
    cfg = RunConfig.from_dict(
        {
            "backbone": {"spec": spec, "checkpoint": checkpoint},
            "method": "linear",
            "task": "segment",
            "data": {"root": str(seg)},
            "train": {"epochs": 2, "batch_size": 16, "lr": 2e-3, "device": "cpu"},
        }
    )
    return train(cfg, out, progress=False)


def test_decoder_only_from_the_shipped_weights_beats_random_weights(seg, tmp_path):
    """Measured: Dice 98.9 from the shipped weights, 52.8 from random ones (sam:tiny, seed 0)."""
    shipped = _linear(seg, tmp_path / "shipped")
    with pytest.warns(UserWarning, match="random weights"):
        random = _linear(seg, tmp_path / "random", spec="sam:tiny")
    assert shipped["trainable_params"] == random["trainable_params"] == 40_640  # the decoder and no-mask embedding
    assert shipped["test_dice"] > 90 and shipped["test_dice"] > random["test_dice"] + 25, (shipped, random)
    assert shipped["test_iou_pooled"] > random["test_iou_pooled"] + 25


def test_seg_demo_prints_its_table_and_writes_the_mask_figure(tmp_path, capsys):
    import vpeft.demo as demo

    rows = demo.run_seg_demo(tmp_path, epochs=1, progress=False)
    out = capsys.readouterr().out
    assert [r["label"] for r in rows] == ["linear", "gps", "full"]
    assert [r["trainable_params"] for r in rows][::2] == [40_640, 85_344]  # decoder only; everything
    assert 40_640 < rows[1]["trainable_params"] < 85_344  # GPS: the decoder, selected weights and biases
    assert all(r["backbone"] == "sam:tiny_synth" and r["backbone_weights"] == "shipped" for r in rows)
    assert all(r["test_images"] == 100 for r in rows)
    for r in rows:
        line = next(x for x in out.splitlines() if x.startswith(f"{r['label']} "))
        assert f"{r['test_dice']:.2f}" in line and f"{r['test_iou_pooled']:.2f}" in line
        assert f"{r['trainable_params']:,}" in line
        assert r["test_dice"] > 90
    png = tmp_path / "masks.png"
    from PIL import Image

    with Image.open(png) as img:  # 4 rows x 5 columns (image, ground truth, 3 methods) of 1.6 in cells at 100 dpi
        assert img.size[0] >= 5 * 140 and img.size[1] >= 4 * 140
    gps = json.loads((tmp_path / "summary.json").read_text())[1]["selection"]
    assert gps["selected"] > 0 and gps["images"] == 240  # the training split's images only
