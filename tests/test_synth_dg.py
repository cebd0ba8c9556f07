"""The generated domain-generalisation suite (issue 17): byte-identical by seed, in the VTAB-1K layout vpeft reads, a
target that covers a strict subset of the classes, a source a tiny ViT learns a little; both class-handling modes by
hand on a toy."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY

from vpeft.config import RunConfig
from vpeft.data.entries import read_entries
from vpeft.data.synth_dg import NUM_CLASSES, TARGETS, class_name, generate_dg
from vpeft.engine.trainer import train
from vpeft.metrics_dg import accuracy_all_and_present


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dg")
    generate_dg(root, seed=0, n_test=200, n_target=200)
    return root


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_and_another_seed_other_images(suite, tmp_path):
    generate_dg(tmp_path / "again", seed=0, n_test=200, n_target=200)
    assert files(tmp_path / "again") == files(suite)
    generate_dg(tmp_path / "other", seed=1, n_test=200, n_target=200)
    other = files(tmp_path / "other")
    assert other.keys() == files(suite).keys()
    assert other["source/images/test/000000.png"] != files(suite)["source/images/test/000000.png"]


def test_folders_read_as_vtab1k_with_the_whole_label_space(suite):
    sizes = {"train800": 800, "val200": 200, "train800val200": 1000, "test": 200}
    for split, n in sizes.items():
        entries, image_root = read_entries(suite / "source", split, fmt="vtab1k")
        assert len(entries) == n and all((image_root / e.path).is_file() for e in entries)
        assert all(0 <= e.label < NUM_CLASSES for e in entries)
    train_labels = {e.label for e in read_entries(suite / "source", "train800val200")[0]}
    assert train_labels == set(range(NUM_CLASSES)) and NUM_CLASSES >= 100
    meta = json.loads((suite / "suite.json").read_text())
    assert meta["num_classes"] == NUM_CLASSES and meta["source"]["splits"] == sizes
    assert set(meta["targets"]) == set(TARGETS)
    lines = [f"{i} {class_name(i)}" for i in range(NUM_CLASSES)]
    for t in meta["targets"].values():
        folder = suite / t["folder"]
        assert (folder / "classes.txt").read_text().splitlines() == lines  # a target's model has every class
        entries, image_root = read_entries(folder, "test", fmt="vtab1k")
        assert len(entries) == t["test"] == 200 and all((image_root / e.path).is_file() for e in entries)
        assert sorted({e.label for e in entries}) == t["present"] and t["num_present"] == len(t["present"])
    assert (suite / "source" / "classes.txt").read_text().splitlines() == lines


def test_the_subset_target_covers_a_strict_subset_and_the_others_every_class(suite):
    meta = json.loads((suite / "suite.json").read_text())
    present = {name: set(t["present"]) for name, t in meta["targets"].items()}
    assert present["subset"] < set(range(NUM_CLASSES)) and len(present["subset"]) == NUM_CLASSES // 4
    assert all(p == set(range(NUM_CLASSES)) for name, p in present.items() if name != "subset")


def test_targets_are_shifted_from_the_source(suite):
    """The styles differ where a model looks first: the sketch is light, the colour target's hues are the source's
    complement, the texture target's backgrounds are not plain."""

    def images(folder: str, n: int = 40) -> np.ndarray:
        from PIL import Image

        return np.stack([np.asarray(Image.open(suite / folder / f"images/test/{i:06d}.png")) for i in range(n)])

    source, sketch, texture = images("source"), images("target_sketch"), images("target_texture")
    assert source.mean() < 100 < 200 < sketch.mean()
    plain = (source[:, :4, :4] == source[:, :1, :1]).all(axis=(1, 2, 3)).mean()
    textured = (texture[:, :4, :4] == texture[:, :1, :1]).all(axis=(1, 2, 3)).mean()
    assert plain > 0.8 and textured < 0.5


@pytest.mark.filterwarnings("ignore:backbone .* has random weights")
def test_a_tiny_vit_learns_the_source_above_chance(suite, tmp_path):
    """128 classes from 1,000 images: two epochs stay at chance, twenty learn a little (about 8 s on a CPU)."""
    cfg = RunConfig.from_dict(
        {
            "backbone": {"spec": TINY},
            "method": "full",
            "data": {"root": str(suite / "source")},
            "train": {"epochs": 20, "batch_size": 16, "lr": 1e-3, "device": "cpu"},
        }
    )
    r = train(cfg, tmp_path / "run", progress=False)
    assert r["num_classes"] == NUM_CLASSES
    assert r["test_acc"] > 5.0  # chance is 0.8 %; about 15 % here


def test_accuracy_all_and_present_by_hand():
    """3 images, 5 classes, the target holds classes 1 and 3.

    image 0, label 1: argmax over all is 1 (right); over {1, 3} it is 1 (right).
    image 1, label 3: argmax over all is 0 (wrong); over {1, 3}: 3 (2 > 0, right).
    image 2, label 1: argmax over all is 4 (wrong); over {1, 3}: 3 (3 > 1, wrong).
    """
    logits = torch.tensor([[0.0, 5, 0, 1, 0], [9, 0, 0, 2, 0], [0, 1, 0, 3, 7]])
    acc = accuracy_all_and_present(logits, torch.tensor([1, 3, 1]), {1, 3})
    assert acc == pytest.approx({"all": 100 / 3, "present": 200 / 3})
    assert accuracy_all_and_present(logits.numpy(), [1, 3, 1], [3, 1]) == acc  # arrays and lists alike
    assert accuracy_all_and_present(logits, [1, 3, 1], range(5))["present"] == pytest.approx(100 / 3)


@pytest.mark.parametrize(
    "labels, present, match",
    [
        ([1, 3, 2], {1, 3}, r"labels \[2\] are not among the 2 present"),
        ([1, 3, 1], {1, 5}, r"in 0\.\.4"),
        ([1, 3, 1], set(), "no class"),
        ([1, 3], {1, 3}, "expected logits"),
    ],
)
def test_accuracy_all_and_present_rejects_bad_input(labels, present, match):
    with pytest.raises(ValueError, match=match):
        accuracy_all_and_present(torch.zeros(3, 5), labels, present)
