"""Extra test sets (``data.extra_tests``, issue 17): target domains evaluated after training, with both class
handlings (argmax over every class, and over the classes present in the target) recorded and checked by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, make_task

from vpeft.cli import main
from vpeft.config import RunConfig
from vpeft.data.vtab import load_split, normalize
from vpeft.engine.trainer import train
from vpeft.errors import ConfigError, DataError
from vpeft.run import load_run


def _target(root: Path, labels: list[int], n: int = 10) -> Path:
    """A target domain: a VTAB-1K-layout test list over some of the source's classes (inverted-colour images)."""
    from PIL import Image

    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    lines = []
    for i in range(n):
        Image.fromarray(255 - rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        lines.append(f"images/{i}.png {labels[i % len(labels)]}")
    (root / "test.txt").write_text("\n".join(lines) + "\n")
    return root


def _cfg(source: Path, tests: dict) -> RunConfig:
    return RunConfig.from_dict(
        {
            "backbone": {"spec": TINY},
            "method": "bitfit",
            "data": {"root": str(source), "train_split": "train800", "extra_tests": tests},
            "train": {"epochs": 1, "batch_size": 8, "device": "cpu"},
        }
    )


@pytest.fixture
def source(tmp_path) -> Path:
    return make_task(tmp_path / "source", num_classes=5)


def test_targets_record_both_accuracies_as_computed_by_hand(source, tmp_path):
    sub = _target(tmp_path / "sub", [1, 3])
    full = _target(tmp_path / "full", [0, 1, 2, 3, 4])
    r = train(
        _cfg(source, {"sub": str(sub), "full": {"root": str(full), "classes": "present"}}),
        tmp_path / "r",
        progress=False,
    )
    assert set(r["tests"]) == {"sub", "full"}
    model, objective, cfg, _ = load_run(tmp_path / "r")
    for name, root in (("sub", sub), ("full", full)):
        ds = load_split(root, "test", (32, 32))
        with torch.no_grad():
            logits = objective.predict(model.eval(), normalize(ds.images, "inception")).numpy()
        y = ds.labels.numpy()
        present = sorted(set(y.tolist()))
        all_acc = 100 * np.mean(logits.argmax(1) == y)
        present_acc = 100 * np.mean(np.array(present)[logits[:, present].argmax(1)] == y)
        t = r["tests"][name]
        assert t["accuracy_all"] == pytest.approx(all_acc) and t["accuracy_present"] == pytest.approx(present_acc)
        assert t["accuracy"] == t["accuracy_present"] and t["classes_present"] == len(present)
        assert t["images"] == 10 and t["format"] == "vtab1k"
    assert r["tests"]["full"]["accuracy_all"] == r["tests"]["full"]["accuracy_present"]  # every class present
    assert json.loads((tmp_path / "r" / "result.json").read_text())["tests"] == r["tests"]


def test_classes_all_is_the_headline_when_asked_and_warned(source, tmp_path):
    sub = _target(tmp_path / "sub", [1, 3])
    with pytest.warns(UserWarning, match="classes=all scores the argmax over all 5 classes .* has only 2"):
        r = train(_cfg(source, {"sub": {"root": str(sub), "classes": "all"}}), tmp_path / "r", progress=False)
    assert r["tests"]["sub"]["accuracy"] == r["tests"]["sub"]["accuracy_all"]
    assert r["tests"]["sub"]["classes"] == "all"


def test_bad_targets_fail_clearly_before_the_run_folder_is_touched(source, tmp_path):
    with pytest.raises(DataError, match=r"target 'gone': data folder .*nowhere does not exist"):
        train(_cfg(source, {"gone": str(tmp_path / "nowhere")}), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match=r"data.extra_tests.x: unknown key\(s\) clases"):
        train(_cfg(source, {"x": {"root": str(source), "clases": "all"}}), tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="classes must be 'present' or 'all'"):
        train(_cfg(source, {"x": {"root": str(source), "classes": "some"}}), tmp_path / "r", progress=False)


def test_a_target_label_outside_the_models_classes_and_an_empty_target(source, tmp_path):
    bad = _target(tmp_path / "bad", [1, 7])
    with pytest.raises(DataError, match=r"test.txt:2: label 7 is outside the class range 0..4 of the run"):
        train(_cfg(source, {"bad": str(bad)}), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()  # before training
    empty = _target(tmp_path / "empty", [1])
    (empty / "test.txt").write_text("")
    with pytest.raises(DataError, match=r"list file .*empty/test.txt has no entries"):
        train(_cfg(source, {"empty": str(empty)}), tmp_path / "r2", progress=False)


def test_vpeft_eval_scores_a_finished_run_on_a_target(source, tmp_path, capsys):
    sub = _target(tmp_path / "sub", [1, 3])
    r = train(_cfg(source, {"sub": str(sub)}), tmp_path / "r", progress=False)
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "r"), "--target", f"again={sub}", "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["target"] == "again"
    assert got["accuracy_present"] == r["tests"]["sub"]["accuracy_present"]
    assert got["accuracy_all"] == r["tests"]["sub"]["accuracy_all"]


def test_the_report_gives_a_domain_generalisation_table(source, tmp_path):
    from statistics import mean, pstdev

    from vpeft.bench.report import write_report

    sub = _target(tmp_path / "sub", [1, 3])
    runs = []
    for seed in (0, 1):
        cfg = _cfg(source, {"sub": str(sub)}).to_dict()
        cfg["train"]["seed"] = seed
        runs.append(train(RunConfig.from_dict(cfg), tmp_path / "sweep" / f"s{seed}", progress=False))
    rep = write_report(tmp_path / "sweep", tmp_path / "rep")
    text = "\n".join(rep["markdown"])
    assert "## Domain generalisation" in text and "| method | source | sub | targets mean |" in text

    def cell(values):
        m, s = mean(values), pstdev(values)
        return f"{m:.1f}" + (f" ±{s:.1f}" if s else "")

    dg = rep["markdown"][rep["markdown"].index("## Domain generalisation") :]
    row = next(line for line in dg if line.startswith("| `bitfit`"))
    src = cell([r["test_acc"] for r in runs])
    tgt = cell([r["tests"]["sub"]["accuracy"] for r in runs])
    assert row == f"| `bitfit` | {src} | {tgt} | **{tgt}** |"


def test_a_lists_source_and_a_target_of_another_layout(source, tmp_path):
    """A target takes its own layout: the source's lists options (list and image roots) are not passed on to it."""
    sub = _target(tmp_path / "sub", [1, 3])
    cfg = _cfg(source, {"sub": str(sub)}).to_dict()
    cfg["data"].update({"format": "lists", "lists_root": "."})
    r = train(RunConfig.from_dict(cfg), tmp_path / "r", progress=False)
    assert r["tests"]["sub"]["format"] == "vtab1k" and r["tests"]["sub"]["images"] == 10


def test_the_generated_dg_suite_end_to_end_from_the_command_line(tmp_path, capsys):
    assert main(["data", "synth", "--suite", "dg", "--out", str(tmp_path / "d"), "--n-test", "100"]) == 0
    folders = capsys.readouterr().out.split()
    assert [Path(f).name for f in folders] == [
        "source",
        "target_sketch",
        "target_colour",
        "target_texture",
        "target_subset",
        "fewshot",
    ]
    dg = tmp_path / "d" / "dg"
    tests = "{" + ", ".join(f"{Path(f).name[7:]}: {f}" for f in folders[1:5]) + "}"
    assert (
        main(
            [
                "train",
                "--data",
                str(dg / "source"),
                "--backbone",
                "vit_c10_small",
                "--method",
                "bitfit",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "r"),
                "--no-progress",
                f"data.extra_tests={tests}",
            ]
        )
        == 0
    )
    r = json.loads((tmp_path / "r" / "result.json").read_text())
    assert set(r["tests"]) == {"sketch", "colour", "texture", "subset"}
    assert r["num_classes"] == 128 and r["tests"]["subset"]["classes_present"] == 32
    for t in r["tests"].values():  # restricting the argmax to the classes present can only help
        assert t["accuracy_present"] >= t["accuracy_all"]
    assert all(r["tests"][k]["classes_present"] == 128 for k in ("sketch", "colour", "texture"))


def test_the_dg_demo_prints_source_and_target_accuracies(tmp_path, monkeypatch, capsys):
    import vpeft.demo as demo

    monkeypatch.setattr(demo, "DG_RUNS", demo.DG_RUNS[:1])
    rows = demo.run_dg_demo(tmp_path, epochs=1, progress=False)
    out = capsys.readouterr().out
    t = rows[0]["tests"]
    assert set(t) == {"sketch", "colour", "texture", "subset"} and t["subset"]["classes_present"] == 32
    line = next(x for x in out.splitlines() if x.startswith("linear "))
    assert f"{rows[0]['test_acc']:.1f}" in line and f"{t['sketch']['accuracy']:.1f}" in line
    assert "over the classes present / over every class" in out


def test_a_target_is_decoded_in_chunks_bounded_by_the_setting_with_the_same_accuracies(source, tmp_path, monkeypatch):
    import vpeft.targets as targets

    sub = _target(tmp_path / "sub", [1, 3], n=10)
    whole = train(_cfg(source, {"sub": str(sub)}), tmp_path / "a", progress=False)["tests"]["sub"]
    sizes = []
    real = targets.decode_chunks

    def spy(entries, image_root, size, chunk):
        for images, part in real(entries, image_root, size, chunk):
            sizes.append(len(images))
            yield images, part

    monkeypatch.setattr(targets, "decode_chunks", spy)
    cfg = _cfg(source, {"sub": str(sub)}).to_dict()
    cfg["data"]["eval_memory_mb"] = 3 * 3 * 32 * 32 / 2**20  # three 32 px images
    chunked = train(RunConfig.from_dict(cfg), tmp_path / "b", progress=False)["tests"]["sub"]
    assert sizes == [3, 3, 3, 1]
    assert chunked == whole


def test_data_check_reads_the_targets_of_a_run(source, tmp_path, capsys):
    """``vpeft data check SOURCE --set data.extra_tests=...``: each target's images, the classes it covers and the
    images it shares with the source's training split; a missing target is an error naming it."""
    from vpeft.cli import main

    sub = _target(tmp_path / "sub", [1, 3])
    shutil.copy(source / "images" / "train800" / "0002.png", sub / "images" / "4.png")  # leaked from training
    tests = f"{{sub: {{root: {sub}, classes: all}}, gone: {tmp_path / 'nowhere'}}}"
    assert main(["data", "check", str(source), "--set", f"data.extra_tests={tests}"]) == 1
    out = capsys.readouterr().out
    n = len((sub / "test.txt").read_text().splitlines())
    assert f"target sub: {n} images, 2 of 5 classes present, 1 the same bytes as a training image (vtab1k" in out
    assert "target 'sub': 1 image(s) have the same bytes as a training image of the source (e.g. images/4.png)" in out
    assert f"error: target 'gone': data folder {tmp_path / 'nowhere'} does not exist" in out
    tests = f"{{sub: {sub}}}"
    (sub / "test.txt").write_text((sub / "test.txt").read_text() + "images/0.png 9\n")
    assert main(["data", "check", str(source), "--set", f"data.extra_tests={tests}"]) == 1
    assert "test.txt:" in capsys.readouterr().out  # the label outside the source's 5 classes, by file and line
