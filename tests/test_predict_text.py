"""``vpeft predict --texts`` (issue 20): a text run predicts the lines of a text file, formatted and tokenised as its
data were: the predictions equal ``vpeft eval``'s on the same examples; bad files and mismatched inputs fail in one
line."""

import csv
import json
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="text runs need the text extra: pip install 'vpeft[text]'")

import torch  # noqa: E402

from vpeft.cli import main  # noqa: E402
from vpeft.config import RunConfig  # noqa: E402
from vpeft.data.entries import layout  # noqa: E402
from vpeft.data.sources import layout_options  # noqa: E402
from vpeft.data.synth_text import generate_glue  # noqa: E402
from vpeft.engine.trainer import train  # noqa: E402
from vpeft.errors import ConfigError, DataError  # noqa: E402
from vpeft.predict import Predictor, read_texts  # noqa: E402
from vpeft.rundir import RunDir  # noqa: E402


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    generate_glue(root, seed=0)
    return root


def _run(glue, out, backbone, task, folder):
    cfg = {
        "backbone": {"spec": backbone},
        "method": "lora",
        "task": task,
        "data": {"root": str(glue / folder)},
        "train": {"epochs": 2, "batch_size": 32, "lr": 3e-3, "device": "cpu"},
    }
    return train(RunConfig.from_dict(cfg), out, progress=False)


def _test_rows(run_dir):
    """The run's own test examples, read as its data section reads them."""
    cfg = RunConfig.from_dict(RunDir(run_dir).read_config())
    return layout(cfg.data.format).examples(Path(cfg.data.root), "test", **layout_options(cfg.data))


@pytest.mark.parametrize(
    "backbone, task, folder",
    [
        ("hf_text:tiny_bert", "text_classify", "RTE"),
        ("hf_text:tiny_bert", "text_regress", "STS-B"),
        ("t5:tiny", "text2text", "RTE"),
    ],
)
def test_predictions_on_a_text_file_are_the_runs_test_predictions(glue, tmp_path, capsys, backbone, task, folder):
    r = _run(glue, tmp_path / "r", backbone, task, folder)
    rows = _test_rows(tmp_path / "r")
    (tmp_path / "in.tsv").write_text("".join("\t".join(e.texts) + "\n" for e in rows), encoding="utf-8")
    assert main(["predict", "--run", str(tmp_path / "r"), "--texts", str(tmp_path / "in.tsv"), "--json"]) == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [g["text"] for g in got] == ["\t".join(e.texts) for e in rows]
    labels = [e.label for e in rows]
    if task == "text_regress":  # the values give the run's test Pearson
        from vpeft.tasks.regress import pearson

        assert pearson([g["value"] for g in got], labels) == pytest.approx(r["metrics"]["pearson"], abs=1e-5)
    else:  # the predicted labels give the run's test accuracy; classes are GLUE's names
        correct = sum(g["label"] == y for g, y in zip(got, labels))
        assert 100.0 * correct / len(rows) == pytest.approx(r["test_acc"])
        assert {g["class"] for g in got} <= {"entailment", "not_entailment"}
    assert main(["predict", "--run", str(tmp_path / "r"), "--texts", str(tmp_path / "in.tsv"), "--output",
                 str(tmp_path / "p.csv")]) == 0  # fmt: skip
    table = list(csv.reader((tmp_path / "p.csv").open()))
    assert table[0][0] == "text" and len(table) == len(rows) + 1


def test_bad_text_files_and_mismatched_inputs_fail_in_one_line(glue, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("a fine line\n\nanother\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.tsv, line 2: expected one text, or two texts separated by one tab"):
        read_texts(bad)
    bad.write_text("one\ttwo\tthree\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 1"):
        read_texts(bad)
    bad.write_bytes(b"\xff\xfe\x00bad\n")
    with pytest.raises(DataError, match=r"bad.tsv is not UTF-8 text \(byte 0: invalid start byte\)"):
        read_texts(bad)
    with pytest.raises(DataError, match="no such text file"):
        read_texts(tmp_path / "missing.tsv")
    assert read_texts_ok(tmp_path) == [("a sentence",), ("first", "second")]

    _run(glue, tmp_path / "r", "hf_text:tiny_bert", "text_classify", "RTE")
    capsys.readouterr()
    assert main(["predict", "--run", str(tmp_path / "r"), "--images", str(tmp_path)]) == 2
    assert "is a text run: give the examples with --texts FILE" in capsys.readouterr().err
    assert main(["predict", "--run", str(tmp_path / "r")]) == 2
    assert "give --images (an image model) or --texts FILE" in capsys.readouterr().err
    assert main(["predict", "--runs", str(tmp_path / "r"), "--texts", str(tmp_path / "ok.tsv")]) == 2
    assert "--runs (DTL's shared trunk) predicts images: give --images" in capsys.readouterr().err
    assert main(["merge", "--run", str(tmp_path / "r"), "--out", str(tmp_path / "m.safetensors")]) == 0
    for given, said in (
        (["--images", str(tmp_path)], "is a merged text model: vpeft predict reads texts from the run itself"),
        (["--texts", str(tmp_path / "ok.tsv")], "predicting texts needs the text run itself (--run RUN)"),
    ):
        capsys.readouterr()
        assert main(["predict", "--merged", str(tmp_path / "m.safetensors"), *given]) == 2
        assert said in capsys.readouterr().err
    with pytest.raises(ConfigError, match="this is a text model"):
        next(Predictor.from_run(tmp_path / "r").predict([tmp_path / "x.png"]))
    ids = Predictor.from_run(tmp_path / "r").encode([("a", "b")])
    assert ids.dtype == torch.int64 and ids.dim() == 2


def read_texts_ok(tmp_path):
    ok = tmp_path / "ok.tsv"
    ok.write_text("a sentence\nfirst\tsecond\n", encoding="utf-8")
    return read_texts(ok)
