"""The practitioner's data (#21): a plain folder of class folders just works (detected, split by vpeft, hidden and
system entries left out with a note), CSV labels may be class names, labels that no training image teaches are an
error unless switched to a warning, ``--data`` naming a file says so, and ``--skip-bad`` says what it left out."""

import json
import warnings

import numpy as np
import pytest
import yaml
from conftest import SHARED_DATA, TINY, make_task
from PIL import Image

from vpeft.cli import main
from vpeft.config import DataConfig, RunConfig, run_identity
from vpeft.data.check import check
from vpeft.data.entries import detect, read_entries
from vpeft.data.formats.folder import auto_split, folder_classes, ignored_entries, split_counts
from vpeft.data.sources import check_labels, describe_split
from vpeft.errors import ConfigError, DataError

CLASSES = ("cat", "dog", "eel")


def _png(path, seed=0, size=12):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def _plain(root, per_class=10, junk=True):
    """``root/<class>/<i>.png``, and with ``junk`` what a real folder carries: a git repository, macOS and Jupyter
    debris, hidden files beside the images and a folder without images."""
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            _png(root / name / f"{i:02d}.png", seed=100 * c + i)
    if junk:
        _png(root / ".git" / "objects" / "a.png")
        _png(root / "__MACOSX" / "cat" / "._00.png")
        _png(root / ".ipynb_checkpoints" / "x.png")
        (root / ".DS_Store").write_bytes(b"\0\0")
        (root / "cat" / "._00.png").write_bytes(b"AppleDouble")  # not an image: would fail to decode
        (root / "notes").mkdir()
        (root / "notes" / "readme.txt").write_text("not a class")
    return root


# ---- 1. a plain class folder ----------------------------------------------------------------------------------------
def test_a_plain_class_folder_is_detected_and_its_debris_left_out_with_one_note(tmp_path):
    root = _plain(tmp_path / "pets")
    assert detect(root) == ["folder"]
    assert DataConfig(root=str(root)).format == "folder"  # data.format=auto (the default) records what it picked
    with pytest.warns(UserWarning) as caught:
        assert folder_classes(root) == list(CLASSES)
    note = [str(w.message) for w in caught if "left out" in str(w.message)]
    assert len(note) == 1
    for name in (".git/", "__MACOSX/", ".ipynb_checkpoints/", ".DS_Store", "cat/._00.png", "notes/ (no images)"):
        assert name in note[0]
    assert set(ignored_entries(root)) == {
        ".DS_Store",
        ".git/",
        ".ipynb_checkpoints/",
        "__MACOSX/",
        "cat/._00.png",
        "notes/ (no images)",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the note is given once per folder
        assert folder_classes(root) == list(CLASSES)


def test_the_split_is_stratified_seeded_and_covers_every_image_once(tmp_path):
    root = _plain(tmp_path / "pets", junk=False)
    parts = {s: read_entries(root, s, "folder")[0] for s in ("train", "val", "test")}
    for label in range(3):
        assert [sum(e.label == label for e in parts[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    paths = [e.path for es in parts.values() for e in es]
    assert sorted(paths) == sorted(f"{c}/{i:02d}.png" for c in CLASSES for i in range(10))  # each image once
    assert all(e.path.split("/")[0] == CLASSES[e.label] for es in parts.values() for e in es)
    again = auto_split(root)
    assert {s: [e.path for e in es] for s, es in again.items()} == {s: [e.path for e in es] for s, es in parts.items()}
    other = auto_split(root, split_seed=1)
    assert [e.path for e in other["test"]] != [e.path for e in parts["test"]]
    wide = read_entries(root, "test", "folder", fractions=(0.6, 0.2, 0.2))[0]
    assert len(wide) == 6
    # small classes still give every split with a share an image, and train keeps one
    assert split_counts(1, (0.8, 0.1, 0.1)) == (1, 0, 0) and split_counts(2, (0.8, 0.1, 0.1)) == (1, 0, 1)
    assert split_counts(3, (0.8, 0.1, 0.1)) == (1, 1, 1) and split_counts(10, (0.7, 0.0, 0.3)) == (7, 0, 3)
    with pytest.raises(DataError, match="has no val images"):
        read_entries(root, "val", "folder", fractions=(0.7, 0.0, 0.3))
    with pytest.raises(DataError, match="vpeft splits it into train, val, test, not 'train800'"):
        read_entries(root, "train800", "folder")


def test_split_fractions_are_checked_and_do_not_change_recorded_run_ids(tmp_path):
    root = _plain(tmp_path / "pets", junk=False)
    dc = DataConfig.from_dict({"root": str(root), "split_fractions": "0.6,0.2,0.2"})
    assert dc.split_fractions == (0.6, 0.2, 0.2)
    for bad in ("0.8,0.1", "0.5,0.1,0.1", "0.9,0.1,0", "1.2,-0.1,-0.1"):
        with pytest.raises(ConfigError, match="'split_fractions': expected three shares"):
            DataConfig.from_dict({"split_fractions": bad})
    task = make_task(tmp_path / "task")
    resolved = RunConfig.from_dict({"data": {"root": str(task)}}).to_dict()
    assert resolved["data"]["format"] == "vtab1k"  # detected
    old = json.loads(json.dumps(resolved))
    for key in ("split_fractions", "split_seed", "strict_labels"):
        del old["data"][key]  # a config written before the options existed
    assert run_identity(old) == run_identity(resolved)
    changed = RunConfig.from_dict({"data": {"root": str(task), "split_seed": 3}}).to_dict()
    assert run_identity(changed) != run_identity(resolved)


def test_existing_layouts_detect_as_before(tmp_path):
    task = make_task(tmp_path / "vtab")
    assert DataConfig(root=str(task)).format == "vtab1k"
    (task / "train800val200.txt").unlink()  # incomplete, with an images/ folder: still read (and named) as VTAB-1K
    assert DataConfig(root=str(task)).format == "vtab1k"
    csv_root = tmp_path / "csv"
    _png(csv_root / "img" / "0.png")
    for s in ("train", "test"):
        (csv_root / f"{s}.csv").write_text("path,label\nimg/0.png,0\n")
    assert DataConfig(root=str(csv_root)).format == "csv"
    fgvc = tmp_path / "fgvc"
    _png(fgvc / "images" / "a" / "0.png")
    for s in ("train", "test"):
        (fgvc / f"{s}.json").write_text(json.dumps({"a/0.png": 0}))
    assert DataConfig(root=str(fgvc)).format == "fgvc"
    few = tmp_path / "few"
    _png(few / "imgs" / "0.png")
    (few / "annotations").mkdir()
    assert DataConfig(root=str(few)).format == "fewshot"
    split = tmp_path / "split"
    for s in ("train", "test"):
        _png(split / s / "cat" / "0.png")
    assert DataConfig(root=str(split)).format == "folder"
    assert DataConfig(root=str(tmp_path / "nowhere")).format == "vtab1k"  # its reader names the problem
    both = make_task(tmp_path / "both")
    (both / "train.csv").write_text("path,label\n")
    (both / "test.csv").write_text("path,label\n")
    assert DataConfig(root=str(both)).format == "vtab1k"  # VTAB-1K first, as before auto-detection
    (both / "train800val200.txt").unlink()
    (both / "annotations").mkdir()
    with pytest.raises(ConfigError, match=r"several layouts \(csv, fewshot\): set data.format"):
        DataConfig(root=str(both))


def test_a_plain_class_folder_trains_without_any_option_and_records_its_split(tmp_path, capsys):
    root = _plain(tmp_path / "pets")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="left out 6 hidden"):
        assert (
            main(
                [
                    "train",
                    "--data",
                    str(root),
                    "--backbone",
                    TINY,
                    "--method",
                    "bitfit",
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
    result = json.loads((out / "result.json").read_text())
    assert result["class_names"] == list(CLASSES) and result["num_classes"] == 3 and result["test_total"] == 3
    data = yaml.safe_load((out / "config.yaml").read_text())["data"]
    assert data["format"] == "folder" and data["split_fractions"] == [0.8, 0.1, 0.1] and data["split_seed"] == 0
    assert describe_split(DataConfig(**{k: v for k, v in data.items()})) == {
        "made_by": "vpeft",
        "fractions": [0.8, 0.1, 0.1],
        "seed": 0,
        "stratified": True,
    }
    capsys.readouterr()
    assert main(["eval", "--run", str(out)]) == 0
    assert "(same)" in capsys.readouterr().out
    # the class names and the head's size always agree
    assert (
        main(
            [
                "train",
                "--data",
                str(root),
                "--backbone",
                TINY,
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "r4"),
                "--no-progress",
                "data.num_classes=4",
            ]
        )
        == 2
    )
    assert "has 3 classes (cat, dog, eel) but the run has 4" in capsys.readouterr().err


def test_csv_labels_may_be_class_names(tmp_path, capsys):
    root = tmp_path / "csv"
    rows = {"train": 9, "val": 3, "test": 6}
    n = 0
    for s, k in rows.items():
        lines = []
        for i in range(k):
            _png(root / "img" / f"{n}.png", seed=n)
            lines.append(f"img/{n}.png,{('zebra', 'ant', 'moth')[i % 3]}\n")
            n += 1
        (root / f"{s}.csv").write_text("path,label\n" + "".join(lines))
    entries, _ = read_entries(root, "train", "csv")
    assert [e.label for e in entries[:3]] == [2, 0, 1]  # sorted names: ant 0, moth 1, zebra 2
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(root),
                "--backbone",
                TINY,
                "--method",
                "linear",
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    result = json.loads((out / "result.json").read_text())
    assert result["class_names"] == ["ant", "moth", "zebra"] and result["num_classes"] == 3
    capsys.readouterr()
    assert check(root, "auto", out=print)
    assert "no errors" in capsys.readouterr().out
    (root / "test.csv").write_text("path,label\nimg/0.png,2\n")
    with pytest.raises(DataError, match=r"test.csv:2 has the number '2': give every label as a class name"):
        read_entries(root, "train", "csv")
    (root / "test.csv").write_text("path,label\nimg/0.png,1.5\nimg/1.png,2\n")
    (root / "train.csv").write_text("path,label\nimg/0.png,1\n")
    (root / "val.csv").unlink()
    with pytest.raises(DataError, match="label '1.5' is not an integer"):  # numbers stay numbers
        read_entries(root, "test", "csv")


def test_data_check_reads_plain_folders_and_csv_files(tmp_path, capsys):
    root = _plain(tmp_path / "pets", junk=False)
    assert main(["data", "check", str(root)]) == 0  # the command's default layout falls back to detection
    printed = capsys.readouterr().out
    assert "layout: folder" in printed and "pets" in printed and "no errors" in printed
    (root / "dog" / "03.png").write_bytes(b"broken")
    assert not check(root, "auto", out=print)
    assert "dog/03.png: cannot decode" in capsys.readouterr().out


# ---- 2. labels with no training example -----------------------------------------------------------------------------
def _gappy(tmp_path, name="task"):
    """A 3-class VTAB-1K task with one training line relabelled 9: a 10-way head, 7 classes never trained."""
    root = make_task(tmp_path / name)
    lines = (root / "train800val200.txt").read_text().splitlines()
    lines[4] = lines[4].rsplit(" ", 1)[0] + " 9"
    (root / "train800val200.txt").write_text("\n".join(lines) + "\n")
    return root


def test_labels_without_training_examples_fail_by_default_and_warn_when_switched(tmp_path, capsys):
    root = _gappy(tmp_path)
    args = ["train", "--data", str(root), "--backbone", TINY, "--epochs", "1", "--batch-size", "8", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "strict")]) == 2
    err = capsys.readouterr().err
    assert "train800val200.txt: label(s) 3..8 of 0..9 have no training example" in err
    assert "data.strict_labels=false" in err and "Traceback" not in err
    assert not (tmp_path / "strict").exists()  # nothing was written
    with pytest.warns(UserWarning, match=r"label\(s\) 3..8 of 0..9 have no training example"):
        assert main([*args, "--out", str(tmp_path / "lax"), "data.strict_labels=false"]) == 0
    assert json.loads((tmp_path / "lax" / "result.json").read_text())["num_classes"] == 10
    assert not check(root, out=print)
    assert "train800val200.txt: label(s) 3..8 of 0..9 have no training example" in capsys.readouterr().out


def test_declared_classes_allow_gaps(tmp_path):
    root = _gappy(tmp_path)
    dc = DataConfig(root=str(root))
    with pytest.raises(DataError, match="have no training example"):
        check_labels(dc, "train800val200", 10)
    check_labels(DataConfig(root=str(root), num_classes=10), "train800val200", 10)  # data.num_classes
    (root / "classes.txt").write_text("".join(f"{i} c{i}\n" for i in range(10)))
    check_labels(dc, "train800val200", 10)  # classes.txt
    # a VTAB-1K task by its folder name, whose canonical count matches: classes left out of 1,000 images by design
    svhn = _gappy(tmp_path, "svhn")
    check_labels(DataConfig(root=str(svhn)), "train800val200", 10)


@pytest.mark.skipif(not (SHARED_DATA / "vtab1k").is_dir(), reason="../shared/data is not beside this checkout")
def test_the_shipped_vtab_tasks_declare_their_classes():
    for task in sorted((SHARED_DATA / "vtab1k").iterdir()):
        dc = DataConfig(root=str(task))
        assert dc.format == "vtab1k"
        n = sum(1 for line in (task / "classes.txt").read_text().splitlines() if line.strip())
        check_labels(dc, "train800val200", n)  # a subset of a dataset's classes, renumbered: no gap


# ---- 3. --data naming a file; 4. --skip-bad says what it left out ---------------------------------------------------
def test_data_naming_a_file_says_so(tmp_path, capsys):
    task = make_task(tmp_path / "task")
    listed = task / "train800val200.txt"
    assert main(["train", "--data", str(listed), "--backbone", TINY, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"data folder {listed} is a file, not a folder" in err and str(task) in err
    assert err.count("\n") == 1
    assert main(["data", "check", str(listed)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_skip_bad_says_how_many_lines_it_left_out_and_where(tmp_path):
    root = make_task(tmp_path / "task")
    (root / "images" / "train800" / "0003.png").unlink()
    (root / "images" / "train800" / "0005.png").write_bytes(b"broken")
    with pytest.warns(
        UserWarning,
        match=r"left out 2 bad line\(s\) of split 'train800val200' \(2 in .*train800val200"
        r"\.txt\); first: .*train800val200.txt:4: image .*0003.png does not exist",
    ):
        assert (
            main(
                [
                    "train",
                    "--data",
                    str(root),
                    "--backbone",
                    TINY,
                    "--epochs",
                    "1",
                    "--batch-size",
                    "8",
                    "--skip-bad",
                    "--out",
                    str(tmp_path / "r"),
                    "--no-progress",
                ]
            )
            == 0
        )
