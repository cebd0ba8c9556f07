"""Data formats: every registered layout resolves its default splits, reads them, names file and line in its errors
and is recognised by its markers; a new layout joins through an entry point alone and trains end to end."""

import json
import re

import numpy as np
import pytest
from conftest import TINY, install_plugin, make_task
from PIL import Image

from vpeft.cli import main
from vpeft.config import DataConfig
from vpeft.data.check import check
from vpeft.data.entries import detect, layout, read_entries
from vpeft.data.sources import augment_kind, resolve_splits
from vpeft.data.vtab import load_split
from vpeft.errors import ConfigError, DataError
from vpeft.registry import FORMATS

SPLITS = {"train": 9, "val": 6, "test": 6}
#: The image layouts of class labels (``segfolder``'s labels are masks: tests/test_segfolder.py; text layouts hold no
#: image entries: tests/test_glue_layout.py).
CLASS_FORMATS = [n for n in FORMATS.names() if "int" in FORMATS.get(n).label_kinds and FORMATS.get(n).kind == "image"]

TSV = '''
"""A toy layout: ``<split>.tsv``, lines ``<label>\\t<path>``."""

from pathlib import Path

from vpeft.data.entries import Entry, Layout
from vpeft.errors import DataError
from vpeft.files import read_text
from vpeft.registry import FORMATS


@FORMATS.register("tsv")
class Tsv(Layout):
    """Label first, then the path, tab-separated."""

    markers = ("train.tsv", "test.tsv")

    def entries(self, root: Path, split: str, shot: int = 16, seed: int = 0):
        f = root / f"{split}.tsv"
        if not f.is_file():
            raise DataError(f"missing split file {f}")
        out = []
        for i, line in enumerate(read_text(f).splitlines(), 1):
            label, path = line.split("\\t")
            out.append(Entry(path, int(label), i, f))
        return out, root
'''


def _images(d, names, seed=0):
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(d / n)


def _sample(root, name):
    """A small task folder in layout ``name``: 3 classes, train / val / test (those the layout's defaults name)."""
    if name == "vtab1k":
        return make_task(root, n_train=9, n_test=6)
    rows = {s: [(f"img/{s}_{i}.png", i % 3) for i in range(n)] for s, n in SPLITS.items()}
    if name != "folder":
        for s in rows:
            _images(root / "img", [p.split("/")[1] for p, _ in rows[s]])
    if name == "fgvc":
        for s, r in rows.items():
            (root / f"{s}.json").write_text(json.dumps(dict(r)))
    elif name == "fewshot":
        (root / "annotations").mkdir()
        files = {"train": "train_meta.list.num_shot_16.seed_0", "val": "val_meta.list", "test": "test_meta.list"}
        for s, r in rows.items():
            (root / "annotations" / files[s]).write_text("".join(f"{p} {y}\n" for p, y in r))
    elif name == "folder":
        for s, n in SPLITS.items():
            for c in ("cat", "dog", "eel"):
                _images(root / s / c, [f"{i}.png" for i in range(n // 3)])
    elif name == "lists":
        for s, r in rows.items():
            (root / f"{s}.txt").write_text("".join(f"{p} {y}\n" for p, y in r))
    elif name == "csv":
        for s, r in rows.items():
            (root / f"{s}.csv").write_text("path,label\n" + "".join(f"{p},{y}\n" for p, y in r))
    elif name == "coop":  # rows [path, label, class name], one per line block as CoOp's files (indent 4)
        splits = {s: [[p, y, f"class_{y}"] for p, y in r] for s, r in rows.items()}
        (root / "split_zhou_Toy.json").write_text(json.dumps(splits, indent=4))
    elif name == "tsv":
        for s, r in rows.items():
            (root / f"{s}.tsv").write_text("".join(f"{y}\t{p}\n" for p, y in r))
    else:
        pytest.fail(f"no sample data for format {name!r}: add a writer to tests/test_formats.py's _sample")
    return root


@pytest.fixture
def tsv_plugin(tmp_path, monkeypatch):
    """Module ``toy_vpeft_tsv`` on ``sys.path``, declared in the entry-point group ``vpeft.formats``; ``FORMATS``
    reads its entry points again and is restored afterwards."""
    install_plugin(
        monkeypatch, tmp_path / "plugin", {"toy_vpeft_tsv": TSV}, FORMATS, "[vpeft.formats]\ntsv = toy_vpeft_tsv\n"
    )
    yield


def test_the_builtin_formats_are_registered():
    assert FORMATS.names() == ["coop", "csv", "fewshot", "fgvc", "folder", "glue", "lists", "segfolder", "vtab1k"]
    assert layout("vtab1k").splits == ("train800val200", "train800", "val200", "test")
    assert [layout(n).augment for n in ("vtab1k", "fgvc", "fewshot")] == ["none", "crop_flip", "crop_flip_randaug"]


@pytest.mark.parametrize("name", CLASS_FORMATS)
def test_default_splits_resolve_and_read(tmp_path, name):
    root = _sample(tmp_path / name, name)
    dc = DataConfig(root=str(root), format=name)
    assert augment_kind(dc) in ("none", "crop_flip", "crop_flip_randaug")
    last, by_val = resolve_splits(dc, "last"), resolve_splits(dc, "val")
    assert last[1] is None and last[2] == by_val[2]
    for split in {last[0], *by_val}:
        entries, image_root = read_entries(root, split, name)
        assert entries and all((image_root / e.path).is_file() and 0 <= e.label < 3 for e in entries)
    assert detect(root) == [name]  # the markers tell the layouts apart
    assert check(root, name, out=lambda line: None)


@pytest.mark.parametrize("name", CLASS_FORMATS)
def test_the_reader_names_file_and_line(tmp_path, name):
    root = _sample(tmp_path / name, name)
    entries, image_root = read_entries(root, "test", name)
    assert len({(e.source, e.line) for e in entries}) == len(entries)
    assert all(e.source.exists() and e.line >= 1 for e in entries)
    bad = entries[-1]
    (image_root / bad.path).write_bytes(b"broken")
    with pytest.raises(DataError, match=re.escape(f"{bad.source}:{bad.line}: cannot read image")):
        load_split(root, "test", (16, 16), fmt=name, cache=False)
    with pytest.raises(DataError, match="nosuchsplit"):  # a missing split is named
        read_entries(root, "nosuchsplit", name)


def test_an_unknown_format_names_the_registered_ones(tmp_path, capsys):
    with pytest.raises(
        ConfigError,
        match=r"'format': expected one of 'coop', 'csv', .*'vtab1k', got 'fvgc' \(did you mean "
        r"'fgvc'\?\)",
    ):
        DataConfig(format="fvgc")
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "data.format=tvs"]) == 2
    names = "'coop', 'csv', 'fewshot', 'fgvc', 'folder', 'glue', 'lists', 'segfolder', 'vtab1k'"
    expected = f"expected one of {names}, got 'tvs'"
    assert expected in capsys.readouterr().err


def test_a_format_plugin_trains_end_to_end(tmp_path, tsv_plugin, capsys):
    assert "tsv" in FORMATS.names() and layout("tsv").splits == ("train", "train", "val", "test")
    root = _sample(tmp_path / "data", "tsv")
    assert detect(root) == ["tsv"]
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
                "bitfit",
                "--epochs",
                "2",
                "--batch-size",
                "4",
                "--out",
                str(out),
                "--no-progress",
                "data.format=tsv",
            ]
        )
        == 0
    )
    result = json.loads((out / "result.json").read_text())
    assert result["num_classes"] == 3 and result["test_total"] == 6 and result["protocol"]["augment"] == "none"
    capsys.readouterr()
    assert main(["eval", "--run", str(out)]) == 0
    assert "(same)" in capsys.readouterr().out
    assert check(root, "tsv", out=lambda line: None)
