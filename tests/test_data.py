import shutil

import numpy as np
import pytest
from conftest import SHARED_DATA, TINY, make_task
from PIL import Image

from vpeft.cli import main
from vpeft.data.check import check_task
from vpeft.data.suites import VTAB_TASKS, vtab_summary
from vpeft.data.synth import TASKS
from vpeft.data.vtab import load_split
from vpeft.errors import DataError


def _broken_task(tmp_path):
    """A fixture tree with every kind of problem the checker must report."""
    root = make_task(tmp_path / "task", n_train=24, n_test=12, num_classes=3)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8), mode="L").save(root / "images/train800/0001.png")
    Image.fromarray(rng.integers(0, 255, (16, 16, 4), dtype=np.uint8), mode="RGBA").save(
        root / "images/train800/0002.png"
    )
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).convert("P").save(
        root / "images/train800/0003.png"
    )
    (root / "images/train800/0004.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")  # corrupt
    p = root / "images/train800/0005.png"
    p.write_bytes(p.read_bytes()[:50])  # truncated
    (root / "images/train800/0006.png").unlink()  # missing
    shutil.copy(root / "images/train800/0007.png", root / "images/test/0000.png")  # train/test duplicate
    lines = (root / "train800.txt").read_text().splitlines()
    lines[8] = lines[8].rsplit(" ", 1)[0] + " 9"  # label out of range
    (root / "train800.txt").write_text("\n".join(lines) + "\n")
    both = lines + (root / "val200.txt").read_text().splitlines()
    (root / "train800val200.txt").write_text("\n".join(both) + "\n")
    (root / "classes.txt").write_text("0 a\n1 b\n2 c\n")
    return root


def test_check_reports_every_problem(tmp_path):
    rep = check_task(_broken_task(tmp_path))
    text = "\n".join(rep.errors)
    assert "train800.txt:5: " in text and "0004.png: cannot decode" in text
    assert "train800.txt:6: " in text and "0005.png: cannot decode" in text
    assert "train800.txt:7: " in text and "0006.png: cannot read" in text
    assert "train800.txt:9: label 9 is outside the class range 0..2" in text
    assert rep.conversions == {"L": 2, "RGBA": 2, "P": 2}  # each listed in train800 and train800val200
    assert rep.train_test_duplicates == 1 and "same bytes" in rep.warnings[0]
    assert rep.counts == {"train800": 24, "val200": 12, "train800val200": 36, "test": 12} and rep.num_classes == 3


def test_check_command_exit_codes(tmp_path, capsys):
    good = make_task(tmp_path / "good")
    assert main(["data", "check", str(good)]) == 0
    assert "no errors" in capsys.readouterr().out
    assert main(["data", "check", str(_broken_task(tmp_path))]) == 1
    assert "error:" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "nowhere")]) == 2


def test_skip_bad_trains_and_counts(tmp_path):
    import json

    root = _broken_task(tmp_path)
    with pytest.raises(Exception, match="train800val200.txt:9: label 9 is outside"):  # labels are checked first
        load_split(root, "train800val200", (32, 32), 3)
    ds = load_split(root, "train800val200", (32, 32), 3, skip_bad=True)
    assert len(ds) == 36 - 4 and len(ds.skipped) == 4  # corrupt, truncated, missing, label out of range
    assert any("train800val200.txt:5: cannot read image" in m for m in ds.skipped)
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
                "8",
                "--skip-bad",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    result = json.loads((out / "result.json").read_text())
    assert result["skipped_lines"] == {"train800val200": 4, "test": 0}


def test_vtab_table_and_summary():
    assert len(VTAB_TASKS) == 19 and sum(1 for n, g in VTAB_TASKS.values() if g == "natural") == 7
    assert VTAB_TASKS["cifar"] == (100, "natural") and VTAB_TASKS["smallnorb_ele"] == (9, "structured")
    accs = {t: (10.0 if g == "natural" else 40.0 if g == "specialized" else 70.0) for t, (_, g) in VTAB_TASKS.items()}
    s = vtab_summary(accs)
    assert s["natural"] == 10 and s["specialized"] == 40 and s["structured"] == 70
    assert s["mean_of_groups"] == 40.0
    assert s["mean_of_tasks"] == pytest.approx((7 * 10 + 4 * 40 + 8 * 70) / 19)


def test_canonical_class_count_mismatch_warns(tmp_path):
    from vpeft.config import RunConfig
    from vpeft.engine.trainer import train

    root = make_task(tmp_path / "cifar", num_classes=3)
    cfg = RunConfig.from_dict(
        {"backbone": {"spec": TINY}, "data": {"root": str(root)}, "train": {"epochs": 1, "batch_size": 8}}
    )
    with pytest.warns(UserWarning, match="3 classes where VTAB-1K's cifar has 100"):
        assert train(cfg, tmp_path / "r", progress=False)["num_classes"] == 3


def test_synthetic_suite_has_six_tasks_covering_the_groups():
    assert {"shapes", "texture", "count", "location", "orientation", "distance"} <= set(TASKS)


@pytest.mark.skipif(not (SHARED_DATA / "vtab1k").is_dir(), reason="../shared/data is not beside this checkout")
def test_shared_vtab_tasks_check_and_train(tmp_path, capsys):
    assert main(["data", "check", str(SHARED_DATA / "vtab1k")]) == 0
    printed = capsys.readouterr().out
    tasks = sorted(p.name for p in (SHARED_DATA / "vtab1k").iterdir() if (p / "test.txt").is_file())
    for t in tasks:
        assert t in printed
        assert (
            main(
                [
                    "train",
                    "--data",
                    str(SHARED_DATA / "vtab1k" / t),
                    "--backbone",
                    TINY,
                    "--method",
                    "bitfit",
                    "--epochs",
                    "1",
                    "--batch-size",
                    "128",
                    "--out",
                    str(tmp_path / t),
                    "--no-progress",
                ]
            )
            == 0
        )


def _images(dirpath, names, size=20, seed=0):
    rng = np.random.default_rng(seed)
    dirpath.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(dirpath / n)


def _layout(tmp_path, fmt):
    """A small dataset in each layout: 3 classes, train/val/test."""
    import json

    root = tmp_path / fmt
    splits = {"train": 12, "val": 6, "test": 6}
    if fmt == "fgvc":  # CUB-style: images/ plus JSON splits
        for s, n in splits.items():
            names = [f"{s}_{i}.png" for i in range(n)]
            _images(root / "images" / "class_x", names)
            (root / f"{s}.json").write_text(json.dumps({f"class_x/{m}": i % 3 for i, m in enumerate(names)}))
    elif fmt == "fewshot":
        _images(root / "imgs", [f"{i}.png" for i in range(24)])
        (root / "annotations").mkdir(parents=True)
        lines = [f"imgs/{i}.png {i % 3}" for i in range(24)]
        (root / "annotations" / "train_meta.list.num_shot_4.seed_1").write_text("\n".join(lines[:12]) + "\n")
        (root / "annotations" / "val_meta.list").write_text("\n".join(lines[12:18]) + "\n")
        (root / "annotations" / "test_meta.list").write_text("\n".join(lines[18:]) + "\n")
    elif fmt == "folder":
        for s, n in splits.items():
            for c in ("cat", "dog", "eel"):
                _images(root / s / c, [f"{i}.png" for i in range(n // 3)])
    else:  # csv
        _images(root / "img", [f"{i}.png" for i in range(24)])
        for s, (a, b) in {"train": (0, 12), "val": (12, 18), "test": (18, 24)}.items():
            (root / f"{s}.csv").write_text("path,label\n" + "".join(f"img/{i}.png,{i % 3}\n" for i in range(a, b)))
    return root


@pytest.mark.parametrize("fmt", ["fgvc", "fewshot", "folder", "csv"])
def test_other_layouts_train_and_evaluate(tmp_path, fmt, capsys):
    import json

    root = _layout(tmp_path, fmt)
    out = tmp_path / "run"
    extra = ["data.shot=4", "data.fewshot_seed=1"] if fmt == "fewshot" else []
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
                f"data.format={fmt}",
                *extra,
            ]
        )
        == 0
    )
    result = json.loads((out / "result.json").read_text())
    assert result["num_classes"] == 3 and result["test_total"] == 6
    assert result["protocol"]["augment"] == {"fgvc": "crop_flip", "fewshot": "crop_flip_randaug"}.get(fmt, "none")
    capsys.readouterr()
    assert main(["eval", "--run", str(out)]) == 0
    assert "(same)" in capsys.readouterr().out


@pytest.mark.parametrize("loss", ["ce", "supcon"])
def test_gps_selects_on_an_augmented_layout(tmp_path, loss):
    """fgvc images decode larger than the model's input (for the random crop); GPS's pass must crop them too."""
    import json

    root = _layout(tmp_path, "fgvc")
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
                "--selector",
                f"gps:k=1,loss={loss}",
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--out",
                str(out),
                "--no-progress",
                "data.format=fgvc",
            ]
        )
        == 0
    )
    assert json.loads((out / "result.json").read_text())["selection"]["selected"] > 0


def test_layout_errors_name_the_file_and_entry(tmp_path):
    import json

    from vpeft.errors import DataError

    root = _layout(tmp_path, "fgvc")
    data = json.loads((root / "train.json").read_text())
    data[next(iter(data))] = "seven"
    (root / "train.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"train.json: entry 1 .*label 'seven' is not an integer"):
        load_split(root, "train+val", (32, 32), fmt="fgvc")
    root = _layout(tmp_path, "csv")
    (root / "test.csv").write_text("file,y\nimg/0.png,1\n")
    with pytest.raises(DataError, match="test.csv: the header must name the columns path and label"):
        load_split(root, "test", (32, 32), fmt="csv")


def test_augmented_training_is_deterministic_and_resumes(tmp_path):
    from vpeft.config import RunConfig
    from vpeft.engine.trainer import train

    root = _layout(tmp_path, "fewshot")
    cfg = RunConfig.from_dict(
        {
            "backbone": {"spec": TINY},
            "method": "bitfit",
            "data": {"root": str(root), "format": "fewshot", "shot": 4, "fewshot_seed": 1},
            "train": {"epochs": 3, "batch_size": 4},
        }
    )
    a = train(cfg, tmp_path / "a", progress=False)

    def stop(epoch, entry):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", progress=False, on_epoch_end=stop)
    b = train(cfg, tmp_path / "b", resume=True, progress=False)
    assert a["test_acc"] == b["test_acc"]
    from safetensors.torch import load_file

    wa, wb = (load_file(str(tmp_path / d / "trainable.safetensors")) for d in "ab")
    assert all(torch_equal(wa[k], wb[k]) for k in wa)


def torch_equal(x, y):
    import torch

    return torch.equal(x, y)


@pytest.mark.parametrize("fmt", ["fgvc", "fewshot"])
def test_check_other_suites(tmp_path, fmt, capsys):
    root = _layout(tmp_path, fmt)
    args = ["--shot", "4", "--seed", "1"] if fmt == "fewshot" else []
    assert main(["data", "check", str(root), "--suite", fmt, *args]) == 0
    assert "no errors" in capsys.readouterr().out
    if fmt == "fgvc":
        next((root / "images" / "class_x").glob("test_0.png")).write_bytes(b"broken")
        assert main(["data", "check", str(root), "--suite", fmt]) == 1
        assert "test.json:1:" in capsys.readouterr().out


def test_decoded_cache_is_bounded_and_reused(tmp_path):
    from vpeft.data import vtab

    vtab._CACHE.clear()
    root = make_task(tmp_path / "t")
    first = load_split(root, "train800", (16, 16))
    assert load_split(root, "train800", (16, 16)) is first  # reused, no second decode
    for s in range(vtab.CACHE_SPLITS + 2):
        load_split(root, "train800", (8 + s, 8 + s))
    assert len(vtab._CACHE) == vtab.CACHE_SPLITS
    assert load_split(root, "train800", (16, 16)) is not first  # evicted, decoded again


@pytest.mark.parametrize("fmt", ["vtab1k", "csv"])
def test_list_files_with_a_bom_or_another_encoding(tmp_path, fmt):
    """A byte-order mark (Excel's "CSV UTF-8") is dropped; a non-UTF-8 file names the file and line."""
    from vpeft.data.sources import read_entries

    root = make_task(tmp_path / "t", n_train=4, n_test=4, num_classes=2)
    if fmt == "csv":
        rows = ["path,label"] + [",".join(line.split()) for line in (root / "train800.txt").read_text().splitlines()]
        (root / "train800.csv").write_text("\n".join(rows) + "\n")
        name = "train800.csv"
    else:
        name = "train800.txt"
    text = (root / name).read_text()
    (root / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
    entries, _ = read_entries(root, "train800", fmt)
    assert len(entries) == 4 and entries[0].path == "images/train800/0000.png"
    (root / name).write_bytes(text.encode() + "images/caf\u00e9.png 1\n".encode("cp1252"))
    with pytest.raises(DataError, match=rf"{name}:{6 if fmt == 'csv' else 5}: not UTF-8 text \(byte 0xe9"):
        read_entries(root, "train800", fmt)


def test_high_bit_depth_images_are_rescaled_not_clipped(tmp_path):
    from vpeft.data.vtab import to_rgb

    a16 = np.array([[1000, 30000], [65535, 100]], dtype=np.uint16)
    img = Image.fromarray(a16)
    assert img.mode.startswith("I;16")
    got = np.asarray(to_rgb(img))[..., 0]
    assert got.tolist() == [[4, 117], [255, 0]]  # round(v / 257), where convert("RGB") gives 255, 255, 255, 100
    i32 = Image.fromarray(a16.astype(np.int32))  # mode I (how some Pillow versions open 16-bit PNGs)
    assert np.asarray(to_rgb(i32))[..., 0].tolist() == [[4, 117], [255, 0]]
    f = Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32))
    assert np.asarray(to_rgb(f))[..., 0].tolist() == [[0, 128], [255, 64]]
    rgb = Image.fromarray(np.full((2, 2, 3), 7, dtype=np.uint8))
    assert np.asarray(to_rgb(rgb)).tolist() == np.full((2, 2, 3), 7).tolist()
    # Through the loader: a 16-bit PNG in a task folder decodes rescaled.
    root = make_task(tmp_path / "t", n_train=2, n_test=2, num_classes=2)
    Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)).save(root / "images" / "train800" / "0000.png")
    ds = load_split(root, "train800", (16, 16), cache=False)
    assert int(ds.images[0].max()) == round(40000 / 257)


def test_folder_run_evaluated_on_other_data_checks_its_class_folders(tmp_path, capsys):
    """The folder layout numbers classes by folder name: other data missing a class would shift every later label."""
    import json

    root = _layout(tmp_path / "a", "folder")
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
                "data.format=folder",
            ]
        )
        == 0
    )
    assert json.loads((out / "result.json").read_text())["class_names"] == ["cat", "dog", "eel"]
    same = tmp_path / "same"
    shutil.copytree(root, same)
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--data", str(same)]) == 0
    assert "test acc:" in capsys.readouterr().out
    shutil.rmtree(same / "train" / "dog"), shutil.rmtree(same / "val" / "dog"), shutil.rmtree(same / "test" / "dog")
    assert main(["eval", "--run", str(out), "--data", str(same)]) == 2
    err = capsys.readouterr().err
    assert "class folders are not the run's" in err and "missing: dog" in err
    assert main(["eval", "--run", str(out), "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err
