"""benchmarks/kvasir_seg.py and its experiment (issue 18): the seven methods of recipe ``sam_polyp`` x 3 seeds on a
Kvasir-SEG-like segfolder, at the tiny SAM's own input size, selected on val; the script refuses a backbone that is
not there, and a one-epoch run on generated data writes the report, meta.json and the mask figure."""

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import benchmark_script

from vpeft.bench import expand, load_experiment
from vpeft.config import RunConfig
from vpeft.data.sources import resolve_splits
from vpeft.data.synth_seg import generate_seg

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "benchmarks" / "experiments" / "kvasir_seg.yaml"
LABELS = ["linear", "full", "bitfit", "adapter", "ssf", "lora", "gps"]


def _script():
    return benchmark_script("kvasir_seg")


@pytest.fixture(scope="module")
def kvasir(tmp_path_factory) -> Path:
    """A generated stand-in for ../shared/data/seg/kvasir_seg: images/, masks/ and train/val/test.txt."""
    return generate_seg(tmp_path_factory.mktemp("data") / "kvasir_seg", n_test=12)


def test_the_experiment_is_the_recipe_at_the_tiny_sams_size(kvasir, tmp_path):
    exp = load_experiment(EXPERIMENT, data_root=str(kvasir), backbone={"spec": "sam:tiny"})
    runs = expand(exp, tmp_path)
    assert [r.label for r in runs] == [x for x in LABELS for _ in range(3)] and {r.seed for r in runs} == {0, 1, 2}
    for r in runs:
        c = r.config
        assert c["backbone"]["spec"] == "sam:tiny" and c["data"]["img_size"] is None  # the backbone's 64 px
        assert (c["task"]["name"], c["task"]["loss"], c["data"]["format"]) == ("segment", "bce_iou", "segfolder")
        assert (c["train"]["batch_size"], c["train"]["lr"], c["train"]["epochs"]) == (1, 2e-4, 20)
        assert c["train"]["optimizer"] == ("adam" if r.label == "gps" else "adamw")
        assert c["data"]["root"] == str(kvasir.resolve())
        cfg = RunConfig.from_dict(c)
        assert resolve_splits(cfg.data, cfg.train.select) == ("train", "val", "test")
    assert load_experiment(EXPERIMENT).base["backbone"]["spec"] == "sam:tiny_synth"  # the default: the shipped one


def test_the_script_refuses_a_backbone_that_is_not_there(kvasir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _script().main(["--data", str(kvasir), "--backbone", "sam:nope", "--work", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert "backbone sam:nope is not available here: unknown sam backbone 'nope'" in err
    with pytest.raises(SystemExit):
        _script().main(["--data", str(tmp_path), "--work", str(tmp_path / "w")])
    assert "no Kvasir-SEG data in" in capsys.readouterr().err


def test_a_short_run_writes_the_report_meta_and_figure(kvasir, tmp_path, capsys):
    pytest.importorskip("segment_anything", reason="the SAM family needs the sam extra: pip install 'vpeft[sam]'")
    out, work = tmp_path / "report", tmp_path / "work"
    argv = ["--data", str(kvasir), "--backbone", "sam:tiny", "--epochs", "1", "--seeds", "0"]
    argv += ["--methods", "linear", "gps", "--jobs", "1", "--work", str(work), "--out", str(out)]
    assert _script().main(argv) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["runs"] == 2 and meta["failures"] == 0 and meta["seconds"] > 0
    assert meta["data_root"] == str(kvasir.resolve()) and meta["backbone"] == "sam:tiny"
    assert meta["command"].startswith("python benchmarks/kvasir_seg.py --data")
    text = (out / "summary.md").read_text()
    assert "## Dice and IoU" in text and "`gps`" in text and "`linear`" in text
    if importlib.util.find_spec("vpeft.seg_figure"):
        assert (out / "masks.png").is_file()
