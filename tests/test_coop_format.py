"""The ``coop`` layout: CoOp's ``split_zhou_<Dataset>.json`` with Dassl's few-shot sampling, checked against Dassl's
loop written out here (``dassl/data/datasets/base_dataset.py`` ``generate_fewshot_dataset``, the global ``random``
seeded with the run's seed, training list first, then validation with min(k, 4) shots), the image folders of CoOp's
datasets, class names from the JSON, detection, ``vpeft data check``, a run through the command line and the errors."""

import json
import random
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from PIL import Image

from vpeft.cli import main
from vpeft.config import DataConfig
from vpeft.data.check import check, check_task
from vpeft.data.entries import detect, detect_format, infer_num_classes, layout, read_entries
from vpeft.data.sources import augment_kind, data_class_names
from vpeft.data.vtab import load_split
from vpeft.errors import DataError

NAMES = {0: "pink_primrose", 1: "globe thistle", 2: "moon_orchid"}
#: Training labels in file order: label 2 first, then 0, then 1; 6, 5 and 3 rows, interleaved.
TRAIN = [2, 0, 2, 1, 0, 2, 1, 0, 2, 0, 2, 1, 0, 2]
#: Validation: label 1 first; 5, 2 and 4 rows.
VAL = [1, 0, 2, 0, 2, 0, 1, 2, 0, 2, 0]
TEST = [0, 1, 2, 0, 1, 2, 2]


def _rows(split: str, labels: list[int]) -> list[list]:
    return [[f"{NAMES[y]}/{split}_{i:02d}.png", y, NAMES[y]] for i, y in enumerate(labels)]


def _write_json(f: Path, splits: dict) -> Path:
    # As Dassl's write_json writes CoOp's files: indent 4, so each row spans five lines.
    f.write_text(json.dumps(splits, indent=4, separators=(",", ": ")))
    return f


def _coop(root: Path, images: str = "jpg", name: str = "split_zhou_OxfordFlowers.json") -> Path:
    """A CoOp dataset folder: the split file beside the image folder ``images`` ("": the folder itself)."""
    splits = {"train": _rows("train", TRAIN), "val": _rows("val", VAL), "test": _rows("test", TEST)}
    for k, (p, _, _) in enumerate(r for rows in splits.values() for r in rows):
        path = (root / images / p) if images else root / p
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), (37 * k) % 256, dtype=np.uint8)).save(path)
    _write_json(root / name, splits)
    return root


def _dassl(data_source: list, num_shots: int) -> list:
    """Dassl's generate_fewshot_dataset with repeat=False, on rows [path, label, name], drawing from the global
    ``random`` as Dassl does."""
    if num_shots < 1:
        return data_source
    tracker = defaultdict(list)
    for item in data_source:
        tracker[item[1]].append(item)
    dataset = []
    for _label, items in tracker.items():
        if len(items) >= num_shots:
            sampled_items = random.sample(items, num_shots)
        else:
            sampled_items = items
        dataset.extend(sampled_items)
    return dataset


def _expected(k: int, seed: int) -> tuple[list, list]:
    """What a CoOp dataset's __init__ gives after Dassl's set_random_seed(seed): train, then val from the same
    stream."""
    state = random.getstate()
    try:
        random.seed(seed)
        train = _dassl(_rows("train", TRAIN), k)
        val = _dassl(_rows("val", VAL), min(k, 4))
    finally:
        random.setstate(state)
    return train, val


def _read(root: Path, split: str, k: int, seed: int) -> list[list]:
    entries, image_root = read_entries(root, split, "coop", k, seed)
    assert image_root == root / "jpg" and all((image_root / e.path).is_file() for e in entries)
    return [[e.path, e.label, NAMES[e.label]] for e in entries]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_shots_are_dassls_sample(tmp_path, seed):
    root = _coop(tmp_path / "oxford_flowers")
    train, val = _expected(2, seed)
    # Labels in the order of their first training row (2, 0, 1), two rows each; validation's order 1, 0, 2.
    assert [r[1] for r in train] == [2, 2, 0, 0, 1, 1] and [r[1] for r in val] == [1, 1, 0, 0, 2, 2]
    state = random.getstate()
    try:
        random.seed(12345)  # the global stream is not what the layout draws from, nor does it draw from it
        assert _read(root, "train", 2, seed) == train
        assert _read(root, "val", 2, seed) == val  # drawn after the training sample, as Dassl draws it
        assert random.random() == random.Random(12345).random()
    finally:
        random.setstate(state)
    assert _read(root, "test", 2, seed) == _rows("test", TEST)  # the test list is never sampled


def test_a_pinned_sample(tmp_path):
    """Seed 1, two shots, written out: the rows CPython's random.sample draws for each label's rows (label 2's rows
    0, 2, 5, 8, 10, 13 give 2 and 10; ...), so a change in the algorithm or in the order of the draws shows here."""
    root = _coop(tmp_path / "oxford_flowers")
    train = [e.path.split("/")[1] for e in read_entries(root, "train", "coop", 2, 1)[0]]
    val = [e.path.split("/")[1] for e in read_entries(root, "val", "coop", 2, 1)[0]]
    assert train == ["train_02.png", "train_10.png", "train_01.png", "train_07.png", "train_03.png", "train_06.png"]
    assert val == ["val_06.png", "val_00.png", "val_08.png", "val_03.png", "val_02.png", "val_04.png"]


def test_more_shots_than_a_class_has(tmp_path):
    root = _coop(tmp_path / "oxford_flowers")
    train, val = _expected(4, 0)
    got = _read(root, "train", 4, 0)
    assert got == train and len(got) == 4 + 4 + 3
    # Label 1 has 3 training rows: all of them, in file order; validation's 2 rows of label 1 likewise.
    assert [r[0] for r in got if r[1] == 1] == [r[0] for r in _rows("train", TRAIN) if r[1] == 1]
    assert _read(root, "val", 4, 0) == val and len(val) == 4 + 2 + 4
    # More shots than every class has: all rows, grouped by label in first-row order; validation still takes 4.
    train, val = _expected(16, 5)
    assert _read(root, "train", 16, 5) == train
    assert [r[1] for r in train] == [2] * 6 + [0] * 5 + [1] * 3 and len(val) == 4 + 2 + 4
    assert _read(root, "val", 16, 5) == val


def test_shot_below_one_reads_whole_lists(tmp_path):
    root = _coop(tmp_path / "oxford_flowers")
    for k in (0, -1):
        assert _read(root, "train", k, 7) == _rows("train", TRAIN)
        assert _read(root, "val", k, 7) == _rows("val", VAL)


def test_lines_point_at_the_rows(tmp_path):
    root = _coop(tmp_path / "oxford_flowers")
    f = root / "split_zhou_OxfordFlowers.json"
    lines = f.read_text().splitlines()
    for split in ("train", "val", "test"):
        for e in read_entries(root, split, "coop", 2, 1)[0]:
            assert e.source == f and lines[e.line - 1].strip() == "[" and e.path in lines[e.line]
    # One line per row (as json.dumps writes it without indent).
    f.write_text(json.dumps({"train": _rows("train", TRAIN), "val": [], "test": _rows("test", TEST)}))
    assert {e.line for e in read_entries(root, "test", "coop", 0, 0)[0]} == {1}


@pytest.mark.parametrize("images", ["jpg", "images", "UCF-101-midframes", ""])
def test_image_folders_of_coops_datasets(tmp_path, images):
    root = _coop(tmp_path / "data", images)
    entries, image_root = read_entries(root, "test", "coop")
    assert image_root == (root / images if images else root) and (image_root / entries[0].path).is_file()


def test_class_names_come_from_the_json(tmp_path):
    root = _coop(tmp_path / "oxford_flowers")
    names = ["pink_primrose", "globe thistle", "moon_orchid"]  # as written: '_' stays (prompts replace it)
    assert layout("coop").class_names(root) == names
    dc = DataConfig(root=str(root))
    assert dc.format == "coop" and augment_kind(dc) == "crop_flip"
    assert data_class_names(dc, 3) == names and infer_num_classes(root, ["train"], "coop") == 3


def test_detection(tmp_path):
    root = _coop(tmp_path / "oxford_flowers")
    (root / "split_fewshot").mkdir()  # CoOp's cache folder beside it changes nothing
    assert detect(root) == ["coop"] and detect_format(root) == "coop"
    assert detect_format(tmp_path / "oxford_flowers" / "jpg") != "coop"


def test_data_check(tmp_path):
    root = _coop(tmp_path / "oxford_flowers")
    rep = check_task(root, "auto", 2, 1)
    assert rep.suite == "coop" and not rep.errors
    assert rep.counts == {"train": 6, "val": 6, "test": 7} and rep.num_classes == 3
    lines = []
    assert check(tmp_path, "auto", 2, 1, out=lines.append)  # found below the root too
    assert "oxford_flowers" in "\n".join(lines) and "1 task(s): no errors" in lines[-1]
    # A sampled training image that is missing: an error naming the split file and the row's line.
    e = read_entries(root, "train", "coop", 2, 1)[0][3]
    (root / "jpg" / e.path).unlink()
    lines = []
    assert not check(root, "coop", 2, 1, out=lines.append)
    assert f"error: {root / 'split_zhou_OxfordFlowers.json'}:{e.line}: {root / 'jpg' / e.path}: cannot read" in (
        "\n".join(lines)
    )


def test_a_coop_task_trains_through_the_command_line(tmp_path, capsys):
    root = _coop(tmp_path / "oxford_flowers")
    out = tmp_path / "run"
    args = ["train", "--data", str(root), "--backbone", TINY, "--method", "bitfit", "--epochs", "1"]
    args += ["--batch-size", "4", "--out", str(out), "--no-progress", "data.shot=2", "data.fewshot_seed=1"]
    assert main(args) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["num_classes"] == 3 and result["test_total"] == len(TEST)
    assert result["class_names"] == ["pink_primrose", "globe thistle", "moon_orchid"]
    assert result["protocol"]["format"] == "coop" and result["protocol"]["augment"] == "crop_flip"
    capsys.readouterr()
    assert main(["eval", "--run", str(out)]) == 0
    assert "(same)" in capsys.readouterr().out


def test_bad_input_is_named(tmp_path):
    root = _coop(tmp_path / "d")
    f = root / "split_zhou_OxfordFlowers.json"
    good = json.loads(f.read_text())
    f.write_text('{"train": [["a.png", 0, "a"],\n  ["b.png", 1 "b"]]}')
    with pytest.raises(DataError, match=re.escape(f"{f}:2: not valid JSON: Expecting ',' delimiter")):
        read_entries(root, "train", "coop")
    f.write_text("[]")
    with pytest.raises(DataError, match="expected an object with the lists train, val and test"):
        read_entries(root, "train", "coop")
    for row, at in ([["x.png", "1", "globe thistle"], 2], [["x.png", 1], 0], [["x.png", -1, "a"], 6], ["x.png", 3]):
        test = _rows("test", TEST)
        test[at] = row
        _write_json(f, {**good, "test": test})
        line = f.read_text().splitlines().index('    "test": [') + 2 + 5 * at
        with pytest.raises(
            DataError,
            match=re.escape(f"{f}:{line}: split 'test', row {at}: expected [image path, label >= 0, class name], got "),
        ):
            read_entries(root, "test", "coop")
        assert read_entries(root, "train", "coop")[0]  # another split still reads
        with pytest.raises(DataError, match=re.escape(f"split 'test', row {at}")):
            layout("coop").class_names(root)  # the class names read every split
    _write_json(f, {"train": good["train"], "test": good["test"]})
    with pytest.raises(DataError, match=re.escape(f"{f} is missing split 'val' (it holds: train, test)")):
        read_entries(root, "val", "coop")
    assert check_task(root, "coop", 2, 1).errors == []  # a missing val split is not an error, as other layouts
    _write_json(f, {**good, "val": {"a.png": 0}})
    with pytest.raises(DataError, match=re.escape(f"{f}: split 'val' must be a list of [image path, label, class")):
        read_entries(root, "val", "coop", 2, 1)
    _write_json(f, {**good, "test": []})
    with pytest.raises(DataError, match="split 'test' has no entries"):
        read_entries(root, "test", "coop")
    with pytest.raises(DataError, match="coop splits are train, val, test, not 'train800'"):
        read_entries(root, "train800", "coop")


def test_class_name_errors(tmp_path):
    root = _coop(tmp_path / "d")
    f = root / "split_zhou_OxfordFlowers.json"
    good = json.loads(f.read_text())
    test = _rows("test", TEST)
    test[4][2] = "thistle"
    _write_json(f, {**good, "test": test})
    line = f.read_text().splitlines().index('    "test": [') + 2 + 5 * 4
    with pytest.raises(DataError, match=re.escape(f"{f}:{line}: label 1 is named 'thistle', but 'globe thistle'")):
        layout("coop").class_names(root)
    assert not check(root, "coop", out=lambda _: None)
    # Labels 0, 1, 3: no class 2.
    shifted = {s: [[p, 3 if y == 2 else y, n] for p, y, n in rows] for s, rows in good.items()}
    _write_json(f, shifted)
    with pytest.raises(
        DataError, match=re.escape(f"{f}: labels must be 0..2 for its 3 classes, but it has no label 2")
    ):
        layout("coop").class_names(root)


def test_missing_images_and_split_files(tmp_path):
    root = _coop(tmp_path / "d", "photos")  # not one of CoOp's image folders
    with pytest.raises(DataError, match=r"is in none of the image folders tried: .*/d/jpg, .*/d/images, .*/d$"):
        read_entries(root, "test", "coop")
    root = _coop(tmp_path / "e")
    e = read_entries(root, "test", "coop")[0][5]
    (root / "jpg" / e.path).unlink()
    f = root / "split_zhou_OxfordFlowers.json"
    with pytest.raises(DataError, match=re.escape(f"{f}:{e.line}: image {root / 'jpg' / e.path} does not exist")):
        load_split(root, "test", (16, 16), fmt="coop", cache=False)
    with pytest.warns(UserWarning, match=re.escape(f"skip_bad: left out 1 bad line(s) of split 'test' (1 in {f})")):
        ds = load_split(root, "test", (16, 16), fmt="coop", cache=False, skip_bad=True)
    assert len(ds) == len(TEST) - 1
    (root / "split_zhou_DescribableTextures.json").write_text(f.read_text())
    with pytest.raises(
        DataError,
        match=re.escape(
            "holds several CoOp split files (split_zhou_DescribableTextures.json, split_zhou_OxfordFlowers.json)"
        ),
    ):
        read_entries(root, "test", "coop")
    with pytest.raises(DataError, match=re.escape("holds no CoOp split file (split_zhou_*.json)")):
        read_entries(tmp_path / "d" / "photos", "test", "coop")
