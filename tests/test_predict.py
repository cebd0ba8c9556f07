"""Issue 21, from a trained run to predictions: a folder of class folders -> train -> eval -> merge -> load_merged ->
predict (from the run and from the merged file) -> export to Hugging Face PEFT; and the bad inputs on that path."""

from __future__ import annotations

import csv
import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image

from vpeft import CheckpointError, ConfigError, create_backbone, load_merged
from vpeft.backbones import _hub_reachable, split_backbone_spec
from vpeft.cli import first_sentence, main
from vpeft.methods.merge import read_merged_metadata, save_merged
from vpeft.predict import Predictor, image_files
from vpeft.run import load_run

COLOURS = {"blue": (30, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}


#: The README's practitioner's path (Use section), run as written from a folder holding my_images/ and new_photos/.
def readme_commands() -> list[str]:
    """The commands of the README's practitioner's path: the first bash block after its heading."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("### From a folder of images to predictions") :]
    block = section[section.index("```bash\n") + len("```bash\n") :]
    return [line for line in block[: block.index("```")].splitlines() if line.strip()]


def _square(colour, rng, size: int = 32) -> Image.Image:
    a = np.clip(rng.normal(128, 30, (size, size, 3)), 0, 255).astype(np.uint8)
    lo, hi = rng.integers(2, 8), rng.integers(22, 30)
    a[lo:hi, lo:hi] = colour
    return Image.fromarray(a)


def write_class_folders(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """``root/<split>/<class>/<n>.png``: coloured squares on noise, ``per_class`` images per class by split."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for name, colour in COLOURS.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _square(colour, rng).save(root / split / name / f"{i}.png")
    return root


def write_new_photos(root: Path) -> list[Path]:
    """Unlabelled images in nested folders, plus a hidden image and a text file that must be skipped."""
    rng = np.random.default_rng(1)
    (root / "more").mkdir(parents=True)
    (root / ".cache").mkdir()
    files = []
    for i, colour in enumerate(COLOURS.values()):
        p = root / ("more" if i % 2 else "") / f"photo{i}.png"
        _square(colour, rng).save(p)
        files.append(p)
    _square((0, 0, 0), rng).save(root / ".hidden.png")
    _square((0, 0, 0), rng).save(root / ".cache" / "x.png")
    (root / "notes.txt").write_text("not an image")
    return sorted(files)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A tiny ViT trained 2 epochs with LoRA on q, v (slices of the fused qkv) and fc1, on a class-folder dataset."""
    tmp = tmp_path_factory.mktemp("practitioner")
    data = write_class_folders(tmp / "data", {"train": 8, "test": 4})
    photos = write_new_photos(tmp / "photos")
    run = tmp / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--backbone",
                TINY,
                "--method",
                "lora:rank=2,targets=[q,v,fc1],alpha=4",
                "--epochs",
                "2",
                "--batch-size",
                "8",
                "--out",
                str(run),
                "--no-progress",
                "data.format=folder",
            ]
        )
        == 0
    )
    return tmp, run, photos


def test_image_files_recurse_skip_hidden_and_other_suffixes(lora_run, tmp_path):
    tmp, _, photos = lora_run
    assert image_files([tmp / "photos"]) == photos
    one, more = tmp / "photos" / "photo0.png", tmp / "photos" / "more"
    assert image_files([one, more]) == [one, more / "photo1.png"]  # files as given, then each folder's images
    with pytest.raises(Exception, match="no such image file or folder: .*nowhere"):
        image_files([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="holds no images"):
        image_files([tmp_path / "empty"])


def test_folder_to_prediction_end_to_end(lora_run, tmp_path, capsys):
    tmp, run, photos = lora_run
    result = json.loads((run / "result.json").read_text())
    assert result["class_names"] == ["blue", "green", "red"]
    assert main(["eval", "--run", str(run)]) == 0
    assert "same" in capsys.readouterr().out

    # merge -> load_merged: a plain timm model with the run's outputs and its classes and preprocessing on board
    merged = tmp_path / "m.safetensors"
    assert main(["merge", "--run", str(run), "--out", str(merged)]) == 0
    meta = read_merged_metadata(merged)
    assert meta["class_names"] == ["blue", "green", "red"] and meta["task"] == "classify"
    assert meta["preprocess"]["input_size"] == [32, 32] and meta["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    model, _, _, _ = load_run(run)
    plain = load_merged(merged)
    assert plain.pretrained_cfg["label_names"] == ["blue", "green", "red"]
    assert plain.pretrained_cfg["input_size"] == (3, 32, 32)
    x = Predictor.from_run(run).preprocess.batch(photos)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x), rtol=1e-5, atol=1e-5)

    # predict from the run and from the merged file: the same classes and probabilities, names and top-k
    out_run, out_merged = tmp_path / "run.json", tmp_path / "merged.csv"
    assert (
        main(
            [
                "predict",
                "--run",
                str(run),
                "--images",
                str(tmp / "photos"),
                "--top-k",
                "2",
                "--output",
                str(out_run),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "predict",
                "--merged",
                str(merged),
                "--images",
                str(tmp / "photos"),
                "--top-k",
                "2",
                "--output",
                str(out_merged),
                "--batch-size",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    rows = json.loads(out_run.read_text())
    with out_merged.open() as f:
        table = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == [r["image"] for r in table] == [str(p) for p in photos]
    for r, t in zip(rows, table):
        assert len(r["top_k"]) == 2 and r["class"] in COLOURS and r["class"] == r["top_k"][0]["class"]
        assert r["top_k"][0]["probability"] >= r["top_k"][1]["probability"]
        assert (t["class"], t["class_2"]) == (r["top_k"][0]["class"], r["top_k"][1]["class"])
        assert abs(float(t["probability"]) - r["probability"]) < 1e-5
        assert abs(float(t["probability_2"]) - r["top_k"][1]["probability"]) < 1e-5
    capsys.readouterr()

    # printed: one line per image, top-k capped at the number of classes
    assert main(["predict", "--run", str(run), "--images", str(photos[0]), "--top-k", "5", "--no-progress"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{photos[0]}: ") and all(c in line for c in COLOURS) and line.count(",") == 2

    # export to PEFT: loads on the same timm model with the same outputs
    peft = pytest.importorskip("peft")
    from vpeft.export import base_model

    assert main(["export", "--run", str(run), "--format", "peft", "--out", str(tmp_path / "peft")]) == 0
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert (tmp_path / "peft" / "adapter_model.safetensors").is_file()
    assert config["r"] == 4 and config["lora_alpha"] == 8.0  # q and v of qkv: rank 2r, alpha / r = vpeft's 4 / 2
    assert set(config["rank_pattern"].values()) == {2} and len(config["rank_pattern"]) == 2  # fc1 in both blocks
    loaded = peft.PeftModel.from_pretrained(base_model(run), str(tmp_path / "peft")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)


def test_readme_practitioner_path_runs_as_written(tmp_path, monkeypatch, capsys):
    """Every command of the README's practitioner's path, as written (``vpeft`` is ``main``), on a plain folder of
    class folders that vpeft splits itself."""
    write_class_folders(tmp_path / "my_images", {"": 10})
    photos = write_new_photos(tmp_path / "new_photos")
    monkeypatch.chdir(tmp_path)
    commands = readme_commands()
    assert [c.split()[1] for c in commands] == ["train", "eval", "merge", "predict", "predict", "export"]
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "vpeft" and main(argv[1:]) == 0, line
    result = json.loads(Path("runs/mine/result.json").read_text())
    assert result["class_names"] == sorted(COLOURS) and result["protocol"]["split"]["made_by"] == "vpeft"
    with open("predictions.csv") as f:
        assert len(list(csv.DictReader(f))) == len(photos)
    assert Path("mine-peft/adapter_config.json").is_file()


@pytest.mark.parametrize(
    "method,extra", [("bitfit", []), ("dtl", []), ("vpt_shallow:length=2", ["--objective", "gist"])]
)
def test_predict_with_any_run(small_task, tmp_path, capsys, method, extra):
    """Every method and objective predicts; data without class names prints class numbers, as eval counts them."""
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(small_task),
                "--backbone",
                TINY,
                "--method",
                method,
                *extra,
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--out",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    images = sorted((small_task / "images" / "test").glob("*.png"))
    assert main(["predict", "--run", str(run), "--images", *map(str, images), "--json", "--no-progress"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in rows] == list(map(str, images)) and all(isinstance(r["class"], int) for r in rows)
    model, objective, cfg, _ = load_run(run)
    from vpeft.data.vtab import load_split, normalize

    ds = load_split(small_task, "test", (32, 32))
    with torch.no_grad():
        want = objective.predict(model, normalize(ds.images, "inception")).argmax(-1).tolist()
    assert [r["label"] for r in rows] == want


def test_predict_regression_prints_values(small_task, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(small_task),
                "--backbone",
                TINY,
                "--method",
                "linear",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--out",
                str(run),
                "--no-progress",
                "task.name=regress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    image = sorted((small_task / "images" / "test").glob("*.png"))[0]
    assert main(["predict", "--run", str(run), "--images", str(image), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert set(row) == {"image", "value"} and isinstance(row["value"], float)
    assert main(["predict", "--run", str(run), "--images", str(image), "--output", str(tmp_path / "p.csv")]) == 0
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "image,value"
    capsys.readouterr()
    assert main(["eval", "--run", str(run)]) == 0  # the recorded primary metric is compared too
    out = capsys.readouterr().out
    assert "recorded pearson" in out and "(same)" in out
    result = json.loads((run / "result.json").read_text())
    result["metrics"]["pearson"] += 0.5
    (run / "result.json").write_text(json.dumps(result))
    assert main(["eval", "--run", str(run)]) == 1 and "weights look corrupted" in capsys.readouterr().err


def test_unreadable_image_and_bad_output_are_one_line_errors(lora_run, tmp_path, capsys):
    _, run, photos = lora_run
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    assert main(["predict", "--run", str(run), "--images", str(photos[0]), str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"vpeft: error: cannot read image {bad}") and "\n" not in err
    assert main(["predict", "--run", str(run), "--images", str(photos[0]), "--output", "p.txt"]) == 2
    assert ".csv or a .json" in capsys.readouterr().err


def test_merge_writes_what_its_suffix_says(lora_run, tmp_path, capsys):
    _, run, photos = lora_run
    pth = tmp_path / "m.pth"
    assert main(["merge", "--run", str(run), "--out", str(pth)]) == 0
    with pytest.raises(Exception):  # noqa: B017 - not a safetensors file under another name (any read error)
        from safetensors import safe_open

        safe_open(str(pth), "pt")
    sd = torch.load(pth, weights_only=True)  # a real torch state dict
    model, _, cfg, _ = load_run(run)
    import timm

    meta = read_merged_metadata(pth)
    plain = timm.create_model(meta["timm_name"], **meta["timm_kwargs"])
    plain.load_state_dict(sd)
    x = Predictor.from_run(run).preprocess.batch(photos)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), model(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(load_merged(pth)(x), model(x), rtol=1e-5, atol=1e-5)
    assert meta["class_names"] == ["blue", "green", "red"]
    for bad in ("m.bin", "m"):
        assert main(["merge", "--run", str(run), "--out", str(tmp_path / bad)]) == 2
        assert "unknown suffix" in capsys.readouterr().err and not (tmp_path / bad).exists()


def test_merged_shipped_backbone_loads(tmp_path):
    """A run over a shipped backbone (vpeft.zoo) merges to a file naming its timm architecture; files written before
    (naming the shipped backbone) load too."""
    from safetensors.torch import save_file

    from vpeft import apply_method

    torch.manual_seed(0)
    bb = create_backbone("vit_c10_small", num_classes=3)
    apply_method(bb, "lora:rank=2")
    with torch.no_grad():
        for p in bb.extras.parameters():
            p.normal_(0, 0.05)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = bb(x)
    sd = {k: v.clone() for k, v in bb.model.state_dict().items()}
    save_merged(bb, tmp_path / "m.safetensors")
    assert read_merged_metadata(tmp_path / "m.safetensors")["timm_name"] == "vit_tiny_patch16_224"
    with torch.no_grad():
        torch.testing.assert_close(load_merged(tmp_path / "m.safetensors")(x), want, rtol=1e-5, atol=1e-5)
    # the old files: merged weights under the shipped name
    merged = load_merged(tmp_path / "m.safetensors").state_dict()
    save_file(
        {k: v.contiguous() for k, v in merged.items()},
        str(tmp_path / "old.safetensors"),
        metadata={"format": "vpeft-merged", "timm_name": "vit_c10_small", "timm_kwargs": '{"num_classes": 3}'},
    )
    with torch.no_grad():
        torch.testing.assert_close(load_merged(tmp_path / "old.safetensors")(x), want, rtol=1e-5, atol=1e-5)
    assert set(sd) >= set(merged)
    with pytest.raises(CheckpointError, match="no preprocessing"):
        Predictor.from_merged(tmp_path / "old.safetensors")


def test_eval_exits_non_zero_when_the_accuracy_differs(lora_run, tmp_path, capsys):
    _, run, _ = lora_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = json.loads((copy / "result.json").read_text())
    result["test_acc"] = result["test_acc"] - 1.0  # what a changed trainable.safetensors gives
    (copy / "result.json").write_text(json.dumps(result))
    assert main(["eval", "--run", str(copy)]) == 1
    captured = capsys.readouterr()
    assert "DIFFERENT" in captured.out and "weights look corrupted" in captured.err
    assert main(["eval", "--run", str(copy), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["same"] is False
    assert main(["eval", "--run", str(run)]) == 0


def test_deleted_trainable_gets_advice_that_works(lora_run, tmp_path, capsys):
    _, run, _ = lora_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "trainable.safetensors").unlink()
    assert main(["eval", "--run", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "--resume" not in err and "--overwrite" in err and "deleted" in err
    advice = err.split("'vpeft ", 1)[1].split("'", 1)[0]
    assert main([*shlex.split(advice), "--no-progress"]) == 0  # the advised command, as printed
    capsys.readouterr()
    assert main(["eval", "--run", str(copy)]) == 0
    assert "same" in capsys.readouterr().out
    recorded = json.loads((run / "result.json").read_text())["test_acc"]
    assert json.loads((copy / "result.json").read_text())["test_acc"] == recorded


def test_export_refuses_methods_peft_lacks(small_task, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(small_task),
                "--backbone",
                TINY,
                "--method",
                "ssf",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--out",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "method 'ssf' has no Hugging Face PEFT counterpart" in err and not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "spec,want",
    [
        (
            "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k",
            ("timm", "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k", {}),
        ),
        ("hf-hub:org/name:img_size=32,patch_size=8", ("timm", "hf-hub:org/name", {"img_size": 32, "patch_size": 8})),
        ("timm:hf-hub:org/name:img_size=32", ("timm", "hf-hub:org/name", {"img_size": 32})),
        ("hf_hub:org/name", ("timm", "hf-hub:org/name", {})),
        ("vit_tiny_patch16_224:img_size=32", ("timm", "vit_tiny_patch16_224", {"img_size": 32})),
    ],
)
def test_hf_hub_names_are_timm_names(spec, want):
    assert split_backbone_spec(spec) == want


def test_hf_hub_name_without_a_repository_is_a_clear_error():
    with pytest.raises(ConfigError, match="no hub repository"):
        split_backbone_spec("hf-hub:img_size=32")


def test_hf_hub_weights_offline_fail_fast_and_clearly():
    import time

    if _hub_reachable():
        pytest.skip("the hub is reachable from here")
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="--checkpoint"):
        create_backbone("hf-hub:timm/vit_tiny_patch16_224.augreg_in21k:img_size=32", num_classes=3, pretrained=True)
    assert time.perf_counter() - t0 < 30


def test_list_shows_whole_first_sentences(capsys):
    from vpeft import METHODS

    for kind in ("methods", "selectors", "objectives", "tasks"):
        assert main(["list", kind]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    for line in lines:
        assert line.endswith("."), line
    # a docstring whose first line breaks mid-sentence shows the sentence whole
    doc = METHODS.get("dtl").__doc__
    assert not doc.strip().splitlines()[0].endswith(".")
    assert f"dtl: {first_sentence(doc)}" in lines and first_sentence(doc).endswith("later blocks.")
    assert first_sentence("Uses e.g. a head. Then more.") == "Uses e.g. a head."
