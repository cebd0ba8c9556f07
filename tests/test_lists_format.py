"""The ``lists`` data format: ``<path> <label>`` list files split on the last white space, list and image roots apart
and per split, NOAH's and DTL's path rules on tiny generated folders, every bad input named by file and line, a short
training run and ``vpeft data check``."""

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY
from PIL import Image

from vpeft.config import ADDED_OPTIONS, DataConfig, RunConfig, run_identity
from vpeft.data.check import check, check_task
from vpeft.data.entries import entries_for, infer_num_classes, read_entries
from vpeft.data.sources import load
from vpeft.data.vtab import load_split
from vpeft.engine.trainer import train
from vpeft.errors import ConfigError, DataError

NOAH_TRAIN = "train_meta.list.num_shot_{shot}.seed_{seed}"


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


def _write(path: Path, rows) -> Path:
    """A list file of ``(relative path, label)`` rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{p} {y}\n" for p, y in rows))
    return path


def _rows(split: str, n: int, classes: int = 3) -> list[tuple[str, int]]:
    """``n`` images of ``split`` in class folders whose names hold spaces (as ImageNet-A's do)."""
    return [(f"class {i % classes}/{split} {i}.png", i % classes) for i in range(n)]


def _images(folder: Path, rows, offset: int = 0) -> None:
    for k, (p, _) in enumerate(rows):
        _png(folder / p, (offset + 7 * k) % 256)


def _imagenet(base: Path, lists: str, train_images: str, val_images: str, shot: int = 2, seed: int = 1) -> Path:
    """An ImageNet-like few-shot task under ``base``: a training list of ``shot`` and ``seed`` and a validation list
    in ``lists``, their images apart in ``train_images`` and ``val_images`` (each relative to ``base``)."""
    train, val = _rows("train", 6), _rows("val", 3)
    _write(base / lists / NOAH_TRAIN.format(shot=shot, seed=seed), train)
    _write(base / lists / "val_meta.list", val)
    _images(base / train_images, train)
    _images(base / val_images, val, offset=100)
    return base


def test_the_parser_splits_on_the_last_white_space(tmp_path):
    f = tmp_path / "train.txt"
    f.write_text("a dir/my file.png 3\nx\ty.png\t2\n\n  z.png    4  \nn0 1/a  b.png 0\n")
    entries, image_root = read_entries(tmp_path, "train", "lists")
    assert [(e.path, e.label, e.line) for e in entries] == [
        ("a dir/my file.png", 3, 1),
        ("x\ty.png", 2, 2),
        ("z.png", 4, 4),
        ("n0 1/a  b.png", 0, 5),
    ]
    assert image_root == tmp_path and all(e.source == f for e in entries)


def test_noah_few_shot_imagenet(tmp_path):
    # NOAH lib/datasets.py: lists in <root>/annotations, training images in <root>/train, test images in <root>/val.
    root = _imagenet(tmp_path / "few-shot" / "imagenet", "annotations", "train", "val")
    dc = DataConfig(
        root=str(root),
        lists_root="annotations",
        image_roots={"train": "train", "test": "val"},
        lists={"train": NOAH_TRAIN, "test": "val_meta.list"},
        shot=2,
        fewshot_seed=1,
    )
    assert dc.format == "lists"  # picked by its options under data.format=auto
    train, train_root = entries_for(dc, "train")
    test, test_root = entries_for(dc, "test")
    assert train[0].source == root / "annotations" / "train_meta.list.num_shot_2.seed_1"
    assert (train_root, test_root) == (root / "train", root / "val")
    assert len(train) == 6 and len(test) == 3
    assert all((train_root / e.path).is_file() for e in train) and all((test_root / e.path).is_file() for e in test)
    assert infer_num_classes(dc.root, ["train"], dc.format, 2, 1, {"lists_root": "annotations", "lists": dc.lists}) == 3


@pytest.mark.parametrize("images", ["images", None])
def test_noah_few_shot_fgvc(tmp_path, images):
    # NOAH: an FGVC dataset's images under <root>/images, except Stanford Cars's, under <root> itself.
    root = tmp_path / "few-shot" / ("fgvc-aircraft" if images else "stanford_cars")
    rows = _rows("x", 6)
    _write(root / "annotations" / "train_meta.list.num_shot_1.seed_0", rows)
    _images(root / images if images else root, rows)
    dc = DataConfig(
        root=str(root), format="lists", lists_root="annotations", image_root=images, lists={"train": NOAH_TRAIN}, shot=1
    )
    entries, image_root = entries_for(dc, "train")
    assert image_root == (root / images if images else root)
    assert all((image_root / e.path).is_file() for e in entries)


def test_dtl_domain_generalisation_and_few_shot(tmp_path):
    # DTL data/domain_generalization.py: <data_dir>/imagenet/annotations/..., images in imagenet/images/{train,val}.
    data_dir = tmp_path / "data"
    root = _imagenet(data_dir / "imagenet", "annotations", "images/train", "images/val", shot=16, seed=2)
    dg = DataConfig(
        root=str(root),
        format="lists",
        lists_root="annotations",
        image_roots={"train": "images/train", "test": "images/val"},
        lists={"train": NOAH_TRAIN, "test": "val_meta.list"},
        fewshot_seed=2,
    )
    assert entries_for(dg, "train")[1] == root / "images" / "train"
    assert entries_for(dg, "test")[1] == root / "images" / "val"
    # DTL data/fgfs.py: lists in <data_dir>/few-shot_split/<ds>/annotations, images in <data_dir>/<ds>.
    rows = _rows("t", 4, 2)
    _write(data_dir / "few-shot_split" / "oxford_pets" / "annotations" / "test_meta.list", rows)
    _images(data_dir / "oxford_pets", rows)
    fs = DataConfig(
        root=str(data_dir),
        lists_root="few-shot_split/oxford_pets/annotations",
        image_root="oxford_pets",
        lists={"test": "test_meta.list"},
    )
    entries, image_root = entries_for(fs, "test")
    assert image_root == data_dir / "oxford_pets" and all((image_root / e.path).is_file() for e in entries)
    ds = load(fs, "test", (8, 8), 2, training=False)  # decoded through the run's path, options and all
    assert len(ds) == 4 and ds.labels.tolist() == [0, 1, 0, 1]


def test_per_split_image_roots_and_absolute_roots(tmp_path):
    (tmp_path / "lists").mkdir()
    rows = [("same.png", 0), ("other.png", 1)]
    for split in ("train", "test"):
        _write(tmp_path / "lists" / f"{split}.txt", rows)
        _images(tmp_path / "img" / split, rows, offset=50 if split == "test" else 0)
    options = {"lists_root": str(tmp_path / "lists"), "image_roots": {"train": "img/train", "test": "img/test"}}
    train = load_split(tmp_path, "train", (8, 8), fmt="lists", options=options, cache=False)
    test = load_split(tmp_path, "test", (8, 8), fmt="lists", options=options, cache=False)
    assert int(train.images[0, 0, 0, 0]) == 0 and int(test.images[0, 0, 0, 0]) == 50  # same path, other folder
    # A split without its own image root reads the shared one.
    _write(tmp_path / "lists" / "val.txt", rows)
    _images(tmp_path / "img" / "shared", rows, offset=9)
    val, root = read_entries(tmp_path, "val", "lists", options={**options, "image_root": "img/shared"})
    assert root == tmp_path / "img" / "shared" and len(val) == 2


def test_bad_input_names_file_and_line(tmp_path):
    root = _imagenet(tmp_path, "annotations", "train", "val")
    opts = {
        "lists_root": "annotations",
        "image_roots": {"train": "train", "test": "val"},
        "lists": {"train": NOAH_TRAIN},
    }
    lists = root / "annotations"
    with pytest.raises(DataError, match=re.escape(f"missing list file {lists / 'train_meta.list.num_shot_4.seed_1'}")):
        read_entries(root, "train", "lists", shot=4, seed=1, options=opts)
    with pytest.raises(DataError, match=r"split 'test' \(no data.lists.test: test.txt; files there: .*val_meta"):
        read_entries(root, "test", "lists", options=opts)
    with pytest.raises(DataError, match=re.escape(f"list folder {root / 'lists'} (data.lists_root) does not exist")):
        read_entries(root, "test", "lists", options={"lists_root": "lists"})
    gone = {**opts, "image_roots": {"train": "nowhere"}}
    with pytest.raises(
        DataError, match=re.escape(f"image folder {root / 'nowhere'} of split 'train' (data.image_roots")
    ):
        read_entries(root, "train", "lists", 2, 1, options=gone)
    with pytest.raises(DataError, match=re.escape(f"image folder {root / 'x'} of split 'v' (data.image_root,")):
        read_entries(
            root,
            "v",
            "lists",
            options={"lists_root": "annotations", "image_root": "x", "lists": {"v": "val_meta.list"}},
        )
    with pytest.raises(DataError, match=r"cannot fill in list file name 'train_{shots}'.*\{shot\}, \{seed\}"):
        read_entries(root, "train", "lists", options={**opts, "lists": {"train": "train_{shots}"}})
    f = lists / "train_meta.list.num_shot_2.seed_1"
    good = f.read_text().splitlines()
    f.write_text("\n".join(good[:2] + ["nolabel.png"] + good[2:]) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{f}:3: expected '<relative path> <label>', got 'nolabel.png'")):
        read_entries(root, "train", "lists", 2, 1, options=opts)
    f.write_text("\n".join(good[:3] + ["class 0/a b.png three"]) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{f}:4: label 'three' is not an integer")):
        read_entries(root, "train", "lists", 2, 1, options=opts)
    f.write_text("\n".join(good[:4] + ["class 1/missing one.png 1"]) + "\n")
    missing = root / "train" / "class 1" / "missing one.png"
    with pytest.raises(DataError, match=re.escape(f"{f}:5: image {missing} does not exist")):
        load_split(root, "train", (8, 8), fmt="lists", shot=2, seed=1, options=opts, cache=False)


def test_config_options(tmp_path):
    with pytest.raises(ConfigError, match=r"'image_root' is not read by format 'vtab1k' \(formats that read it: lists"):
        DataConfig(format="vtab1k", image_root="images")
    with pytest.raises(
        ConfigError, match=r"data option 'lists': expected split -> file name, or a list of file names, got"
    ):
        DataConfig.from_dict({"lists": {"train": 3}})
    with pytest.raises(ConfigError, match="option 'image_roots': expected a mapping"):
        DataConfig.from_dict({"image_roots": "train"})
    # Added options at their defaults leave a run's identity as it was.
    ident = run_identity(RunConfig.from_dict({"data": {"root": str(tmp_path)}}).to_dict())
    assert not {"lists_root", "image_root", "image_roots", "lists"} & set(ident["data"])
    assert all(("data", k) in ADDED_OPTIONS for k in ("lists_root", "image_root", "image_roots", "lists"))
    ident = run_identity(RunConfig.from_dict({"data": {"root": str(tmp_path), "lists_root": "a"}}).to_dict())
    assert ident["data"]["lists_root"] == "a" and ident["data"]["format"] == "lists"


def _noah_task(tmp_path) -> tuple[Path, dict]:
    root = _imagenet(tmp_path / "imagenet", "annotations", "train", "val")
    val = _rows("v", 3)
    _write(root / "annotations" / "val_split.list", val)
    _images(root / "train", val, offset=200)
    data = {
        "root": str(root),
        "lists_root": "annotations",
        "image_roots": {"train": "train", "val": "train", "test": "val"},
        "lists": {"train": NOAH_TRAIN, "val": "val_split.list", "test": "val_meta.list"},
        "shot": 2,
        "fewshot_seed": 1,
    }
    return root, data


def test_a_lists_task_trains(tmp_path):
    _, data = _noah_task(tmp_path)
    cfg = RunConfig.from_dict(
        {
            "backbone": {"spec": TINY},
            "method": "linear",
            "data": {**data, "augment": "crop_flip"},
            "train": {"epochs": 2, "batch_size": 3, "select": "val", "device": "cpu"},
        }
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["num_classes"] == 3 and result["test_total"] == 3
    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert recorded["format"] == "lists" and recorded["image_roots"]["test"] == "val"


def test_data_check(tmp_path):
    root, data = _noah_task(tmp_path)
    options = {k: data[k] for k in ("lists_root", "image_roots", "lists")}
    # A validation image with the bytes of a training image, a test list covering two of the three classes.
    train_rows = (root / "annotations" / "train_meta.list.num_shot_2.seed_1").read_text().splitlines()
    first = train_rows[0].rsplit(maxsplit=1)[0]
    (root / "train" / "class 0" / "v 0.png").write_bytes((root / "train" / first).read_bytes())
    _write(root / "annotations" / "val_meta.list", [r for r in _rows("val", 3) if r[1] != 2])
    rep = check_task(root, "lists", 2, 1, options)
    assert rep.counts == {"train": 6, "val": 3, "test": 2} and rep.num_classes == 3 and not rep.errors
    assert rep.split_classes == {"train": 3, "val": 3, "test": 2}
    assert rep.duplicates == {"val": 1, "test": 0}
    assert any("1 image(s) of split 'val' have the same bytes as one of 'train'" in w for w in rep.warnings)
    lines = []
    assert check(root, "lists", 2, 1, out=lines.append, options=options)
    text = "\n".join(lines)
    assert "classes present: train 3, val 3, test 2" in text and "1 task(s): no errors" in text
    # A missing image is an error naming the list file and line.
    (root / "val" / "class 1" / "val 1.png").unlink()
    lines = []
    assert not check(root, "lists", 2, 1, out=lines.append, options=options)
    assert (
        f"error: {root / 'annotations' / 'val_meta.list'}:2: {root / 'val' / 'class 1' / 'val 1.png'}: cannot read"
        in ("\n".join(lines))
    )


def test_data_check_on_the_command_line_takes_the_layouts_options(tmp_path, capsys):
    from conftest import make_task

    from vpeft.cli import main

    root = make_task(tmp_path / "t")
    (root / "lists").mkdir()
    for f in root.glob("*.txt"):
        f.rename(root / "lists" / {"train800.txt": "train.txt", "val200.txt": "val.txt"}.get(f.name, f.name))
    assert main(["data", "check", str(root), "--suite", "lists", "--set", "data.lists_root=lists"]) == 0
    capsys.readouterr()
    assert main(["data", "check", str(root), "--suite", "lists"]) != 0  # the lists are not under the root
    assert main(["data", "check", str(root), "--suite", "lists", "--set", "train.lr=1"]) == 2
    assert "data.KEY=VALUE options only" in capsys.readouterr().err


def test_a_split_may_read_several_list_files_in_turn(tmp_path):
    """PACS's leave-one-domain-out source: one list per domain, read in turn; a missing one is named."""
    doms = {"photo": _rows("p", 3), "sketch": _rows("s", 2)}
    for d, rows in doms.items():
        _write(tmp_path / f"{d}_train.txt", [(f"{d}/{p}", y) for p, y in rows])
        _images(tmp_path / d, rows)
    _write(tmp_path / "cartoon_test.txt", [("cartoon/x.png", 1)])
    _png(tmp_path / "cartoon" / "x.png", 9)
    dc = DataConfig(
        root=str(tmp_path), lists={"train": ["photo_train.txt", "sketch_train.txt"], "test": "cartoon_test.txt"}
    )
    entries, images = entries_for(dc, "train")
    assert [e.path for e in entries] == [f"photo/{p}" for p, _ in doms["photo"]] + [
        f"sketch/{p}" for p, _ in doms["sketch"]
    ]
    assert [e.line for e in entries] == [1, 2, 3, 1, 2] and entries[3].source.name == "sketch_train.txt"
    assert images == tmp_path
    assert len(load(dc, "train", (8, 8), 3, training=True)) == 5
    dc = DataConfig(root=str(tmp_path), lists={"train": ["photo_train.txt", "art_train.txt"]})
    with pytest.raises(DataError, match=r"missing list file .*art_train.txt of split 'train'"):
        entries_for(dc, "train")
    with pytest.raises(ConfigError, match="file name, or a list of file names"):
        DataConfig(root=str(tmp_path), lists={"train": []})
