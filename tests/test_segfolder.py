"""The ``segfolder`` layout (issue 18): images and masks paired by file stem, split lists of stems, image paths or
image and mask paths (Kvasir-SEG's), vpeft's own split without lists; masks read as 0/1 and resized with nearest
neighbour; the errors name the file; ``vpeft data check`` finds unpaired files, masks that are not binary, size
mismatches and images shared between splits; the generated task; the real Kvasir-SEG where it is present."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vpeft.cli import main
from vpeft.config import DataConfig, RunConfig
from vpeft.data.check import check, check_task
from vpeft.data.entries import detect, detect_format, read_entries
from vpeft.data.formats.folder import split_counts
from vpeft.data.loader import DeviceData
from vpeft.data.sources import streamed
from vpeft.data.synth_seg import generate_seg
from vpeft.data.vtab import load_split
from vpeft.errors import DataError

KVASIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "seg" / "kvasir_seg"


def _pair(root: Path, stem: str, seed: int, size=(8, 6), image_suffix=".jpg", mask=None) -> np.ndarray:
    """Write ``images/<stem><suffix>`` (random RGB, ``size`` = width x height) and ``masks/<stem>.png`` (0/255, or
    the given grey array); returns the mask as 0/1."""
    rng = np.random.default_rng(seed)
    w, h = size
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{stem}{image_suffix}")
    grey = (rng.uniform(size=(h, w)) < 0.3).astype(np.uint8) * 255 if mask is None else mask
    Image.fromarray(grey.astype(np.uint8), "L").save(root / "masks" / f"{stem}.png")
    return (grey >= 128).astype(np.uint8)


def _folder(root: Path, n=10) -> dict[str, np.ndarray]:
    return {f"s{i:02d}": _pair(root, f"s{i:02d}", i, image_suffix=".jpg" if i % 2 else ".png") for i in range(n)}


def test_pairs_by_stem_and_splits_itself_without_lists(tmp_path):
    masks = _folder(tmp_path)
    assert detect(tmp_path) == ["segfolder"] and detect_format(tmp_path) == "segfolder"
    parts = {s: read_entries(tmp_path, s, "segfolder", labels="mask")[0] for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in parts] == list(split_counts(10, (0.8, 0.1, 0.1))) == [8, 1, 1]
    stems = [Path(e.path).stem for s in parts for e in parts[s]]
    assert sorted(stems) == sorted(masks)  # every pair once, whatever its image suffix
    for e in (e for s in parts for e in parts[s]):
        assert e.label == f"masks/{Path(e.path).stem}.png" and (tmp_path / e.path).is_file()
    again = read_entries(tmp_path, "test", "segfolder", labels="mask")[0]
    assert [e.path for e in again] == [e.path for e in parts["test"]]  # deterministic
    other = [read_entries(tmp_path, "train", "segfolder", labels="mask", split_seed=s)[0] for s in range(1, 6)]
    assert any({e.path for e in o} != {e.path for e in parts["train"]} for o in other)  # the seed splits
    with pytest.raises(DataError, match="segfolder' holds masks, not int labels"):
        read_entries(tmp_path, "train", "segfolder")


def test_lists_of_stems_image_paths_and_pairs(tmp_path):
    _folder(tmp_path)
    (tmp_path / "train.txt").write_text("s00\ns01\n\n")
    (tmp_path / "val.txt").write_text("images/s02.png\ns03.jpg\n")  # a path from the folder, or from images/
    (tmp_path / "test.txt").write_text("images/s04.png masks/s04.png\nimages/s05.jpg   masks/s05.png\n")
    assert detect(tmp_path) == ["segfolder"]  # not ``lists``, whose train.txt and test.txt are there too
    got = {s: read_entries(tmp_path, s, "segfolder", labels="mask")[0] for s in ("train", "val", "test")}
    assert [(e.path, e.label, e.line) for e in got["train"]] == [
        ("images/s00.png", "masks/s00.png", 1),
        ("images/s01.jpg", "masks/s01.png", 2),
    ]
    assert [e.path for e in got["val"]] == ["images/s02.png", "images/s03.jpg"]
    assert [(e.path, e.label) for e in got["test"]] == [
        ("images/s04.png", "masks/s04.png"),
        ("images/s05.jpg", "masks/s05.png"),
    ]
    assert got["test"][1].source == tmp_path / "test.txt"
    (tmp_path / "val.txt").unlink()
    with pytest.raises(DataError, match=r"missing list file .*val.txt of split 'val' \(lists there: train.txt"):
        read_entries(tmp_path, "val", "segfolder", labels="mask")


def test_a_missing_mask_names_the_file(tmp_path):
    _folder(tmp_path, 4)
    (tmp_path / "masks" / "s01.png").unlink()
    with pytest.raises(DataError, match=r"images/s01.jpg: image has no mask in .*masks \(paired by file stem\)"):
        read_entries(tmp_path, "train", "segfolder", labels="mask")
    (tmp_path / "train.txt").write_text("s00\ns01\n")
    (tmp_path / "test.txt").write_text("s02\n")
    with pytest.raises(DataError, match=r"train.txt:2: image images/s01.jpg has no mask: no file masks/s01\."):
        read_entries(tmp_path, "train", "segfolder", labels="mask")
    (tmp_path / "train.txt").write_text("s00\nimages/s01.jpg masks/s01.png\n")  # an explicit pair: found when read
    with pytest.raises(DataError, match=r"train.txt:2: mask .*masks/s01.png does not exist"):
        load_split(tmp_path, "train", (6, 8), fmt="segfolder", labels="mask", cache=False)
    (tmp_path / "train.txt").write_text("nosuch\n")
    with pytest.raises(DataError, match=r"train.txt:1: no image with stem 'nosuch'"):
        read_entries(tmp_path, "train", "segfolder", labels="mask")


def test_masks_decode_binary_at_the_image_size_with_nearest_neighbour(tmp_path):
    grey = np.array([[0, 100, 200, 255], [255, 128, 127, 0], [0, 0, 0, 0], [255, 255, 255, 255]], np.uint8)
    _pair(tmp_path, "a", 0, size=(4, 4), mask=grey)  # not binary: grey >= 128 is foreground
    _pair(tmp_path, "b", 1, size=(4, 4), mask=np.eye(4, dtype=np.uint8))  # a 0/1 mask is read as it is
    (tmp_path / "test.txt").write_text("a\nb\n")
    (tmp_path / "train.txt").write_text("a\n")
    ds = load_split(tmp_path, "test", (8, 8), fmt="segfolder", labels="mask", cache=False)
    assert ds.images.shape == (2, 3, 8, 8) and ds.masks.shape == (2, 8, 8) and ds.masks.dtype == torch.uint8
    a = (grey >= 128).astype(np.uint8)
    assert np.array_equal(ds.masks[0].numpy(), a.repeat(2, 0).repeat(2, 1))  # each pixel becomes a 2x2 block
    assert np.array_equal(ds.masks[1].numpy(), np.eye(4, dtype=np.uint8).repeat(2, 0).repeat(2, 1))
    assert ds.labels.tolist() == [0, 0] and len(ds) == 2
    small = load_split(tmp_path, "test", (2, 2), fmt="segfolder", labels="mask", cache=False)
    assert set(small.masks.unique().tolist()) <= {0, 1}  # downsizing keeps the values 0 and 1


def test_a_mask_of_another_size_is_an_error_naming_both(tmp_path):
    _pair(tmp_path, "a", 0, size=(8, 6))
    Image.fromarray(np.zeros((5, 8), np.uint8)).save(tmp_path / "masks" / "a.png")
    (tmp_path / "train.txt").write_text("a\n")
    (tmp_path / "test.txt").write_text("a\n")
    with pytest.raises(DataError, match=r"test.txt:1: mask .*a.png is 8x5 but its image is 8x6"):
        load_split(tmp_path, "test", (6, 8), fmt="segfolder", labels="mask", cache=False)


def test_an_edited_mask_is_read_again(tmp_path):
    _pair(tmp_path, "a", 0, mask=np.zeros((6, 8), np.uint8))
    (tmp_path / "train.txt").write_text("a\n")
    (tmp_path / "test.txt").write_text("a\n")
    first = load_split(tmp_path, "test", (6, 8), fmt="segfolder", labels="mask")
    assert int(first.masks.sum()) == 0
    Image.fromarray(np.full((6, 8), 255, np.uint8)).save(tmp_path / "masks" / "a.png")
    assert int(load_split(tmp_path, "test", (6, 8), fmt="segfolder", labels="mask").masks.sum()) == 48


def test_device_batches_carry_the_masks(tmp_path):
    _folder(tmp_path, 10)
    ds = load_split(tmp_path, "train", (6, 8), fmt="segfolder", labels="mask", cache=False)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))
    resident, streamed_ = DeviceData(ds, torch.device("cpu")), DeviceData(ds, torch.device("cpu"), resident=False)
    assert resident.key == "mask"
    for (a, n), (b, m) in zip(resident.mappings(3, order), streamed_.mappings(3, order), strict=True):
        assert set(a) == {"image", "mask"} and n == m and a["mask"].shape == (len(a["image"]), 6, 8)
        assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["image"], b["image"])
    first = next(iter(resident.mappings(3, order)))[0]
    assert torch.equal(first["mask"], ds.masks[order[:3]]) and torch.equal(first["image"], ds.images[order[:3]])


def test_a_split_with_masks_is_not_streamed(tmp_path):
    _folder(tmp_path, 10)
    dc = DataConfig(root=str(tmp_path), format="segfolder", eval_memory_mb=1e-5)
    with pytest.raises(DataError, match="a split with masks is not read in chunks; raise data.eval_memory_mb"):
        streamed(dc, "test", (6, 8), None, "mask")
    assert streamed(DataConfig(root=str(tmp_path), format="segfolder"), "test", (6, 8), None, "mask") is None


def test_tasks_and_formats_match(tmp_path):
    _folder(tmp_path, 4)
    from vpeft.errors import ConfigError

    with pytest.raises(ConfigError, match="task 'classify' reads int labels, which data format 'segfolder'"):
        RunConfig.from_dict({"data": {"root": str(tmp_path)}})
    cfg = RunConfig.from_dict({"task": "segment", "data": {"root": str(tmp_path)}})
    assert cfg.data.format == "segfolder" and cfg.task.formats() == ["segfolder"]


# ---- vpeft data check -----------------------------------------------------------------------------------------------
def _checked_folder(root: Path) -> Path:
    """Lists; a test image with the bytes of a training image; an image without a mask; a mask without an image; a
    mask that is not binary; a mask of the wrong size; an image no list names."""
    for i in range(8):
        _pair(root, f"s{i}", i, image_suffix=".png")
    (root / "images" / "s7.png").write_bytes((root / "images" / "s0.png").read_bytes())  # test s7 == train s0
    (root / "masks" / "s6.png").unlink()
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(root / "masks" / "orphan.png")
    Image.fromarray((np.arange(48).reshape(6, 8) * 5).astype(np.uint8)).save(root / "masks" / "s2.png")
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(root / "masks" / "s3.png")
    _pair(root, "unlisted", 9, image_suffix=".png")
    (root / "train.txt").write_text("s0\ns1\ns2\n")
    (root / "val.txt").write_text("images/s3.png masks/s3.png\n")
    (root / "test.txt").write_text("s4\ns5\ns7\n")
    return root


def test_data_check_reports_every_segmentation_problem(tmp_path, capsys):
    root = _checked_folder(tmp_path / "polyps")
    rep = check_task(root, "segfolder")
    assert rep.counts == {"train": 3, "val": 1, "test": 3}
    assert rep.unpaired == 2 and rep.nonbinary == 1 and rep.size_mismatch == 1 and rep.unlisted == 2
    assert rep.train_test_duplicates == 1 and rep.duplicates == {"val": 0, "test": 1}
    assert [e for e in rep.errors if "val.txt:1: mask masks/s3.png is 3x3 but its image images/s3.png is 8x6" in e]
    text = "\n".join(rep.warnings)
    assert "1 image(s) of split 'test' have the same bytes as one of 'train' (e.g. images/s7.png)" in text
    assert "1 image(s) in images/ have no mask in masks/ (stems: s6)" in text  # in no list: a warning
    assert "1 mask(s) in masks/ have no image in images/ (stems: orphan)" in text
    assert "1 mask(s) are not binary" in text and "masks/s2.png (48 grey values)" in text
    assert "image(s) of images/ are in no list (stems: s6, unlisted)" in text
    assert main(["data", "check", str(root)]) == 1  # the command's default layout falls back to detection
    out = capsys.readouterr().out
    assert "unpaired" in out and "non-binary" in out and "error: " in out
    (root / "test.txt").write_text("s4\ns6\n")  # a listed image without its mask: an error naming the line
    rep = check_task(root, "segfolder")
    assert [e for e in rep.errors if "test.txt:2: image images/s6.png has no mask" in e]


def test_data_check_finds_test_images_inside_the_training_images(tmp_path):
    """As Kvasir-Sessile's 196 test images lie inside Kvasir-SEG, which the release trains on."""
    root = generate_seg(tmp_path / "seg", n_test=20)
    assert check(root, "segfolder", out=lambda line: None)
    rep = check_task(root, "segfolder")
    assert rep.train_test_duplicates == 0 and not rep.errors and not rep.warnings
    for i in (3, 7):
        (root / "images" / f"test_{i:05d}.png").write_bytes((root / "images" / f"train_{i:05d}.png").read_bytes())
    rep = check_task(root, "segfolder")
    assert rep.train_test_duplicates == 2 and rep.duplicates["test"] == 2
    assert [w for w in rep.warnings if w.startswith("2 image(s) of split 'test' have the same bytes")]


def test_data_check_without_lists(tmp_path):
    _folder(tmp_path, 10)
    assert check(tmp_path, "auto", out=lambda line: None)
    (tmp_path / "masks" / "s03.png").unlink()
    rep = check_task(tmp_path, "segfolder")
    assert rep.unpaired == 1 and [e for e in rep.errors if "s03.jpg: image has no mask" in e]
    assert "1 image(s) in images/ have no mask in masks/ (stems: s03)" in rep.errors  # vpeft's split needs every pair


# ---- the generated task ---------------------------------------------------------------------------------------------
def test_the_generated_task_is_deterministic_and_its_masks_are_its_shapes(tmp_path, capsys):
    assert main(["data", "synth", "--suite", "seg", "--out", str(tmp_path / "a"), "--n-test", "30"]) == 0
    root = Path(capsys.readouterr().out.strip())
    assert root == tmp_path / "a" / "seg"
    generate_seg(tmp_path / "b", n_test=30)
    for f in sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file()):
        assert (root / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    about = json.loads((root / "suite.json").read_text())
    assert about["splits"] == {"train": 240, "val": 60, "test": 30} and about["empty_masks"] > 0
    assert all(v > 0 for v in about["shapes"].values())
    ds = load_split(root, "train", (32, 32), fmt="segfolder", labels="mask", cache=False)
    assert len(ds) == 240 and set(ds.masks.unique().tolist()) == {0, 1}
    grey = np.asarray(Image.open(root / "masks" / "train_00000.png"))
    assert set(np.unique(grey).tolist()) <= {0, 255}  # drawn without anti-aliasing
    share = ds.masks.float().mean().item()
    assert 0.05 < share < 0.5, share
    # the shapes stand out: their pixels are brighter on average than the background's
    light = ds.images.float().mean(1)
    assert light[ds.masks.bool()].mean() > light[~ds.masks.bool()].mean() + 30
    generate_seg(tmp_path / "c", seed=1, n_test=30)
    assert (tmp_path / "c" / "images" / "train_00000.png").read_bytes() != (
        root / "images" / "train_00000.png"
    ).read_bytes()


# ---- the real Kvasir-SEG, where it is --------------------------------------------------------------------------------
@pytest.mark.skipif(not KVASIR.is_dir(), reason=f"Kvasir-SEG is not at {KVASIR} (shared data, not shipped)")
def test_the_real_kvasir_seg_reads_as_segfolder():
    assert detect_format(KVASIR) == "segfolder"
    counts = {s: len(read_entries(KVASIR, s, "segfolder", labels="mask")[0]) for s in ("train", "val", "test")}
    assert counts == {"train": 800, "val": 80, "test": 120}
    stems = {s: {Path(e.path).stem for e in read_entries(KVASIR, s, "segfolder", labels="mask")[0]} for s in counts}
    assert not (stems["train"] & stems["test"]) and not (stems["train"] & stems["val"])
    ds = load_split(KVASIR, "val", (32, 32), fmt="segfolder", labels="mask", cache=False)
    assert ds.masks.shape == (80, 32, 32) and set(ds.masks.unique().tolist()) == {0, 1}
    assert 0.05 < ds.masks.float().mean().item() < 0.3  # polyps cover 15 % of an image on average
