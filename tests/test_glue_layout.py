"""The ``glue`` data layout and the text tasks' data path (issue 20): a GLUE task folder is detected, named by its
folder, split by ``data.split_rule`` (ATTEMPT's re-split or GLUE's own), and loaded as token ids by a tokenizer; image
tasks refuse it and text tasks refuse image data."""

import re
from pathlib import Path

import pytest
import torch

from vpeft.config import RunConfig
from vpeft.data.entries import detect, layout
from vpeft.data.sources import load
from vpeft.errors import ConfigError, DataError
from vpeft.registry import TASKS

HEADER = "index\tsentence1\tsentence2\tlabel\n"


def _rte(root: Path, n_train: int = 12, n_dev: int = 10) -> Path:
    folder = root / "RTE"
    folder.mkdir(parents=True)
    rows = lambda n, tag: "".join(  # noqa: E731
        f'{i}\t{tag} premise {i} with a "quote\tit is {tag} {i}\t{"entailment" if i % 2 else "not_entailment"}\n'
        for i in range(n)
    )
    (folder / "train.tsv").write_text(HEADER + rows(n_train, "train"))
    (folder / "dev.tsv").write_text(HEADER + rows(n_dev, "dev"))
    (folder / "test.tsv").write_text("index\tsentence1\tsentence2\n" + "0\ta\tb\n")
    return folder


def fake_tokenizer(texts):
    """One id per word (its length), then padding: a stand-in for a backbone's tokenizer."""
    ids = [[len(w) for t in pair for w in t.split()][:16] for pair in texts]
    return torch.tensor([x + [0] * (16 - len(x)) for x in ids], dtype=torch.int64)


def _dc(root, **data):
    return RunConfig.from_dict({"data": {"root": str(root), "format": "glue", **data}, "task": "text_classify"}).data


def test_a_glue_folder_is_detected_and_names_its_classes(tmp_path):
    rte = _rte(tmp_path)
    assert detect(rte) == ["glue"]
    assert layout("glue").class_names(rte) == ["entailment", "not_entailment"]
    other = tmp_path / "mine"
    other.mkdir()
    (other / "train.tsv").write_text("x")
    with pytest.raises(ConfigError, match=r"'mine' is not a GLUE task's name; name the task with data.glue_task"):
        layout("glue").task(other)


def test_attempts_resplit_and_glues_own_split(tmp_path):
    rte = _rte(tmp_path)
    lay = layout("glue")
    train = lay.examples(rte, "train", "attempt", 42)
    val, test = lay.examples(rte, "val", "attempt", 42), lay.examples(rte, "test", "attempt", 42)
    assert [e.index for e in train] == list(range(12)) and len(val) == 5 and len(test) == 5
    assert sorted(e.index for e in val + test) == list(range(10))  # dev halved, disjoint
    assert val == lay.examples(rte, "val", "attempt", 42) and val != lay.examples(rte, "val", "attempt", 1)
    assert train[0].texts == ('train premise 0 with a "quote', "it is train 0") and train[1].label == 0
    assert [e.index for e in lay.examples(rte, "test", "glue", 0)] == list(range(10))
    with pytest.raises(DataError, match=r"split 'val' does not exist under data.split_rule=glue"):
        lay.examples(rte, "val", "glue", 0)
    assert len(lay.examples(rte, "train", "attempt", 42, max_train=4)) == 4


def test_a_split_loads_as_token_ids(tmp_path):
    rte = _rte(tmp_path)
    ds = load(_dc(rte, split_seed=42), "train", (0, 0), 2, training=True, tokenizer=fake_tokenizer)
    assert ds.images.dtype == torch.int64 and ds.images.shape == (12, 16) and ds.labels.tolist()[:2] == [1, 0]
    with pytest.raises(ConfigError, match=r"data format 'glue' holds text: train it with a text backbone"):
        load(_dc(rte), "train", (0, 0), 2, training=True)
    with pytest.raises(DataError, match=r"label 1, outside the run's 1 classes"):
        load(_dc(rte), "train", (0, 0), 1, training=True, tokenizer=fake_tokenizer)


def test_image_tasks_refuse_text_and_text_tasks_refuse_images(tmp_path):
    rte = _rte(tmp_path)
    for task in ("classify", "regress"):
        with pytest.raises(ConfigError, match=rf"task '{task}' reads image, and data format 'glue' holds text"):
            RunConfig.from_dict({"data": {"root": str(rte), "format": "glue"}, "task": task})
    with pytest.raises(ConfigError, match=r"task 'text_classify' reads text, and data format 'vtab1k' holds image"):
        RunConfig.from_dict({"data": {"format": "vtab1k"}, "task": "text_classify"})


def test_the_glue_suite_picks_each_folders_task_and_reports(tmp_path):
    """Suite ``glue``: RTE trains text_classify, STS-B text_regress (CoLA would be scored by MCC), one report with
    a column per task; through the tiny BERT on the generated pairs."""
    pytest.importorskip("transformers", reason="the hf_text family needs the text extra: pip install 'vpeft[text]'")
    from vpeft.bench import expand, load_experiment
    from vpeft.bench.experiment import _glue_suite_task
    from vpeft.cli import main
    from vpeft.data.synth_text import generate_glue

    assert _glue_suite_task("CoLA") == {"name": "text_classify", "primary": "mcc"}
    assert _glue_suite_task("STS-B") == "text_regress" and _glue_suite_task("RTE") == "text_classify"
    generate_glue(tmp_path / "glue")
    exp = {
        "suite": "glue",
        "data_root": str(tmp_path / "glue"),
        "backbone": {"spec": "hf_text:tiny_bert"},
        "data": {"split_seed": 42},
        "train": {"epochs": 1, "batch_size": 32, "device": "cpu"},
        "methods": ["linear", "lora"],
    }
    runs = expand(load_experiment(exp), tmp_path / "out")
    assert {(Path(r.config["data"]["root"]).name, r.config["task"]["name"]) for r in runs} == {
        ("RTE", "text_classify"),
        ("STS-B", "text_regress"),
    }
    import yaml

    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    assert main(["bench", "run", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    assert main(["report", str(tmp_path / "r")]) == 0
    summary = (tmp_path / "r" / "report" / "summary.md").read_text()
    header = next(line for line in summary.splitlines() if line.startswith("| method |"))
    assert "RTE" in header and "STS-B" in header and "`lora`" in summary and "`linear`" in summary


def test_a_text_task_on_a_missing_folder_names_the_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"^data folder .*nowhere/RTE does not exist$"):
        RunConfig.from_dict({"data": {"root": str(tmp_path / "nowhere" / "RTE")}, "task": "text_classify"})


@pytest.mark.parametrize("name", [n for n in TASKS.names() if TASKS.get(n).inputs == "text"])
def test_a_text_task_on_the_other_kind_of_glue_task_says_which_task_reads_it(name, tmp_path):
    """STS-B holds scores, the other GLUE tasks classes: a task of the other kind fails before anything loads, naming
    the tasks that read the folder (a classification task on STS-B used to die guessing image classes; a regression
    on RTE trained on 0/1 as scores)."""
    rte = _rte(tmp_path)
    stsb = tmp_path / "STS-B"
    stsb.mkdir()
    (stsb / "train.tsv").write_text("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\ts1\ts2\tscore\n")
    (stsb / "dev.tsv").write_text((stsb / "train.tsv").read_text())
    cfg = TASKS.build(name)
    wrong, right = (rte, stsb) if cfg.labels == "float" else (stsb, rte)
    cfg.check_data(_dc(right))  # its own kind passes
    hint = "text_classify (an encoder) or text2text (T5)" if cfg.labels == "float" else "text_regress (an encoder)"
    said = rf"task '{name}' reads .* and .*{wrong.name} holds .*: use --task {re.escape(hint)}"
    with pytest.raises(ConfigError, match=said):
        cfg.check_data(_dc(wrong))
