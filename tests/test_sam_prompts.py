"""SAM prompted from the ground truth (issue 18): prompt mode ``box`` (the mask's bounding box) and ``points`` (one
click on the mask's innermost pixel). Checked here: the box and the point of hand-made masks; the model's masks equal
segment-anything's own ``Sam`` given the same box or point; the point embeddings load from an official checkpoint and
train with the head; a run trains, evaluates, selects with GPS and predicts with the masks published, and a model
without masks to read says what it needs."""

import numpy as np
import pytest
import torch
from conftest import tiny_sam_reference

pytest.importorskip("segment_anything", reason="the SAM family needs the sam extra: pip install 'vpeft[sam]'")

from PIL import Image  # noqa: E402

from vpeft import apply_method, create_backbone  # noqa: E402
from vpeft.cli import main  # noqa: E402
from vpeft.config import RunConfig  # noqa: E402
from vpeft.data.synth_seg import generate_seg  # noqa: E402
from vpeft.data.vtab import normalize  # noqa: E402
from vpeft.engine.trainer import train  # noqa: E402
from vpeft.errors import ConfigError  # noqa: E402
from vpeft.families.sam import official_checkpoint, official_state_dict  # noqa: E402
from vpeft.methods.base import count_params  # noqa: E402
from vpeft.seg_figure import mask_grid, split_pairs  # noqa: E402
from vpeft.seg_prompts import current_masks, ground_truth, inner_points, mask_boxes  # noqa: E402


def _mask(h, w, *boxes):
    """A uint8 mask [h, w] with the given (row0, row1, col0, col1) rectangles (inclusive) set."""
    m = torch.zeros(h, w, dtype=torch.uint8)
    for r0, r1, c0, c1 in boxes:
        m[r0 : r1 + 1, c0 : c1 + 1] = 1
    return m


# ---- the prompts by hand ---------------------------------------------------------------------------------------------
def test_mask_boxes_are_the_inclusive_bounding_boxes():
    masks = torch.stack([_mask(10, 12, (2, 4, 3, 6)), _mask(10, 12, (0, 0, 0, 0), (7, 9, 10, 11)), _mask(10, 12)])
    boxes, found = mask_boxes(masks)
    assert boxes.tolist() == [[3, 2, 6, 4], [0, 0, 11, 9], [0, 0, 0, 0]]  # x0, y0, x1, y1
    assert found.tolist() == [True, True, False]


def test_inner_points_are_the_pixels_farthest_from_the_background():
    masks = torch.stack(
        [
            _mask(10, 10, (2, 6, 1, 5)),  # a 5 x 5 square: its centre
            _mask(10, 10, (3, 3, 2, 8)),  # a one-pixel line: nothing survives an erosion, its middle pixel
            _mask(10, 10, (0, 2, 0, 6)),  # a bar on the border (outside is background): row 1, cols 1..5, middle
            _mask(10, 10, (1, 7, 1, 7), (8, 9, 8, 9)),  # a 7 x 7 square and a speck: the square's centre
            _mask(10, 10),  # empty
        ]
    )
    points, found = inner_points(masks)
    assert points.tolist() == [[3, 4], [5, 3], [3, 1], [4, 4], [0, 0]]  # x, y
    assert found.tolist() == [True, True, True, True, False]


def test_ground_truth_publishes_masks_for_the_block_only():
    m = torch.ones(1, 4, 4)
    assert current_masks() is None
    with ground_truth(m):
        assert current_masks() is m
        with ground_truth(None):
            assert current_masks() is None
        assert current_masks() is m
    assert current_masks() is None


# ---- the model against segment-anything ------------------------------------------------------------------------------
@pytest.fixture
def checkpoint(tmp_path):
    ref = tiny_sam_reference(seed=0)
    path = tmp_path / "sam_tiny.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


@pytest.mark.parametrize("prompt", ["box", "points"])
def test_prompted_masks_equal_segment_anything_given_the_same_prompt(checkpoint, prompt):
    """Each image's box (or innermost point, with SAM's padding point) from its mask, embedded by the head as SAM's
    prompt encoder embeds it: the same mask logits as segment-anything's Sam prompted by hand; an empty mask is
    two not-a-point tokens, which Sam gives for a lone padding-labelled point."""
    ref, path = checkpoint
    bb = create_backbone(f"sam:tiny:prompt={prompt}", num_classes=1, checkpoint=path).eval()
    sd = ref.state_dict()
    for i in range(4):
        w = sd[f"prompt_encoder.point_embeddings.{i}.weight"]
        assert torch.equal(bb.head.point_embeddings[i].weight, w)
    assert torch.equal(bb.head.not_a_point_embed.weight, sd["prompt_encoder.not_a_point_embed.weight"])
    pixels = (torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 255).round()
    masks = torch.stack([_mask(64, 64, (10, 30, 5, 40)), _mask(64, 64, (40, 60, 44, 50), (0, 3, 0, 3)), _mask(64, 64)])
    by_hand = {  # the prompts in the image's pixel frame, as a user of segment-anything passes them
        "box": [{"boxes": torch.tensor([[5.0, 10, 40, 30]])}, {"boxes": torch.tensor([[0.0, 0, 50, 60]])}],
        "points": [
            {"point_coords": torch.tensor([[[22.0, 20]]]), "point_labels": torch.tensor([[1]])},
            {"point_coords": torch.tensor([[[47.0, 50]]]), "point_labels": torch.tensor([[1]])},
        ],
    }[prompt]
    by_hand.append({"point_coords": torch.zeros(1, 1, 2), "point_labels": torch.tensor([[-1]])})
    with torch.no_grad():
        outs = ref(
            [{"image": im, "original_size": (64, 64), **p} for im, p in zip(pixels, by_hand)], multimask_output=False
        )
        want = torch.cat([ref.postprocess_masks(o["low_res_logits"], (64, 64), (64, 64)) for o in outs])
        with ground_truth(masks):
            got = bb(normalize(pixels.to(torch.uint8), "imagenet"))
    assert got.shape == (3, 1, 64, 64) and want.abs().max() > 1
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # and the prompt matters: without it, another mask
        plain = create_backbone("sam:tiny", num_classes=1, checkpoint=path).eval()
        assert not torch.allclose(plain(normalize(pixels.to(torch.uint8), "imagenet")), got, atol=1e-3)


def test_a_prompted_model_without_masks_says_what_it_needs():
    bb = create_backbone("sam:tiny:prompt=box", num_classes=1)
    with pytest.raises(ConfigError, match=r"^sam prompt 'box' is drawn from each image's ground-truth mask, and none"):
        bb(torch.randn(2, 3, 64, 64))
    with ground_truth(torch.ones(3, 64, 64)), pytest.raises(ValueError, match=r"are not the batch's 2 images"):
        bb(torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize("prompt", ["box", "points"])
def test_the_point_embeddings_train_with_the_head_and_round_trip(prompt):
    """Prompt modes add SAM's four point embeddings and its not-a-point embedding (5 x width) to the head, which
    every method trains; the official layout writes them and reads them back."""
    counts = {}
    for p in ("none", prompt):
        bb = create_backbone(f"sam:tiny:prompt={p}", num_classes=1)
        apply_method(bb, "linear")
        counts[p] = count_params(bb.model)
    assert counts[prompt] - counts["none"] == 5 * 32
    model = bb.model
    sd = official_checkpoint(model)
    assert torch.equal(sd["prompt_encoder.point_embeddings.2.weight"], model.head.point_embeddings[2].weight)
    back = official_state_dict(sd, model)
    assert back.keys() == model.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())


# ---- end to end ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    return generate_seg(tmp_path_factory.mktemp("seg"), n_train=48, n_val=16, n_test=16)


def test_a_box_prompted_gps_run_trains_evaluates_and_predicts_with_prompt_masks(seg, tmp_path, capsys):
    """GPS's gradient pass, training and evaluation run with each batch's masks published; vpeft predict needs the
    prompt masks (by stem) and writes the same masks the figure shows."""
    cfg = RunConfig.from_dict(
        {
            "backbone": {"spec": "sam:tiny_synth:prompt=box"},
            "method": "linear",
            "selector": "gps:loss=task,norm_bias=outside_blocks",
            "task": "segment",
            "data": {"root": str(seg)},
            "train": {"epochs": 1, "batch_size": 16, "lr": 2e-3, "device": "cpu"},
        }
    )
    run = tmp_path / "r"
    r = train(cfg, run, progress=False)
    assert r["selection"]["images"] == 48 and r["test_images"] == 16 and 0 <= r["test_dice"] <= 100
    capsys.readouterr()
    assert main(["eval", "--run", str(run)]) == 0
    assert f"recorded dice {r['test_dice']:.4f} (same)" in capsys.readouterr().out
    pairs = split_pairs(seg, "test", 3)
    images = [str(i) for i, _ in pairs]
    assert main(["predict", "--run", str(run), "--images", *images, "--output", str(tmp_path / "p")]) != 0
    assert "sam prompt 'box' is drawn from each image's ground-truth mask" in capsys.readouterr().err
    assert main(["predict", "--run", str(run), "--images", *images, "--output", str(tmp_path / "p"),
                 "--prompt-masks", str(seg / "masks"), "--no-progress"]) == 0  # fmt: skip
    for image, _ in pairs:
        with Image.open(tmp_path / "p" / f"{image.stem}.png") as w, Image.open(image) as i:
            assert w.size == i.size and set(np.asarray(w).ravel().tolist()) <= {0, 255}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", "--run", str(run), "--images", *images, "--output", str(tmp_path / "q"),
                 "--prompt-masks", str(empty)]) != 0  # fmt: skip
    stem = pairs[0][0].stem
    assert f"{stem}.png: no mask named {stem}.* in the prompt mask folder" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
    with Image.open(mask_grid({"gps box": run}, pairs, tmp_path / "grid.png")) as png:
        assert png.size[0] > 0
