"""benchmarks/glue_minilm.py and its experiment (issue 20): six methods x RTE, MRPC, STS-B, SST-2 x 3 seeds on
all-MiniLM-L6-v2 under ATTEMPT's re-split and GLUE's split. The experiment's settings; a short run on generated
GLUE folders (the tiny BERT) trains each small task once and tests its model on both splits' test sets (equal to a
run trained under GLUE's split), trains SST-2 under each split, and writes both tables."""

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="the hf_text family needs the text extra: pip install 'vpeft[text]'")

from conftest import benchmark_script  # noqa: E402

from vpeft.bench import expand, load_experiment  # noqa: E402
from vpeft.config import RunConfig  # noqa: E402
from vpeft.data.synth_text import generate_glue  # noqa: E402
from vpeft.engine.trainer import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "benchmarks" / "experiments" / "glue_minilm.yaml"
LABELS = ["linear", "full", "adapter", "adapter+gist", "lora", "bitfit"]


def _script():
    return benchmark_script("glue_minilm")


@pytest.fixture(scope="module")
def glue(tmp_path_factory) -> Path:
    """Generated RTE and STS-B, and an SST-2 of 1,100 training sentences (ATTEMPT holds 1,000 out)."""
    root = tmp_path_factory.mktemp("glue")
    generate_glue(root, seed=0)
    rng = random.Random(0)
    words = {1: ["good", "great", "fine", "lovely"], 0: ["bad", "awful", "poor", "dull"]}
    sst = root / "SST-2"
    sst.mkdir()
    for name, n in (("train.tsv", 1100), ("dev.tsv", 40)):
        rows = []
        for _ in range(n):
            y = rng.randint(0, 1)
            rows.append(f"a {rng.choice(words[y])} film\t{y}")
        (sst / name).write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return root


def test_the_experiment_is_six_methods_on_minilm_with_mean_pooling(glue, tmp_path):
    exp = load_experiment(EXPERIMENT, data_root=str(glue), tasks=["RTE", "STS-B", "SST-2"])
    runs = expand(exp, tmp_path)
    assert len(runs) == 3 * 6 * 3 and [r.label for r in runs[:18:3]] == LABELS
    for r in runs:
        cfg = RunConfig.from_dict(r.config)
        assert (cfg.backbone.spec, cfg.backbone.pool) == ("hf_text:minilm:max_length=128", "avg")
        assert (cfg.data.split_rule, cfg.data.split_seed, cfg.data.max_train) == ("attempt", 42, 256)
        assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.select) == (3, 16, "last")
        assert cfg.task.name == ("text_regress" if Path(cfg.data.root).name == "STS-B" else "text_classify")
        assert cfg.train.lr == {"linear": 1e-2, "full": 1e-4}.get(r.label, 1e-3)


def test_a_short_run_trains_once_per_shared_split_and_writes_both_tables(glue, tmp_path, capsys):
    script = _script()
    args = ["--data", str(glue), "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out"), "--seeds", "0"]
    args += ["--tasks", "RTE", "STS-B", "SST-2", "--methods", "linear", "adapter+gist", "--max-train", "48"]
    args += ["--epochs", "1", "--backbone", "hf_text:tiny_bert", "--jobs", "1"]
    assert script.main(args) == 0
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["same_training_rows"] == {"RTE": True, "STS-B": True, "SST-2": False}
    assert len(list((tmp_path / "w" / "attempt" / "runs").glob("*/result.json"))) == 3 * 2
    glue_runs = (tmp_path / "w" / "glue" / "runs").glob("*/result.json")
    assert {p.parent.name.split("__")[0] for p in glue_runs} == {"SST-2"}
    cross = sorted((tmp_path / "w" / "glue_split").glob("*.json"))
    assert len(cross) == 2 * 2  # RTE and STS-B, two methods: tested on GLUE's split without training again
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "## ATTEMPT's re-split" in summary and "## GLUE's split" in summary
    assert summary.count("| linear | 66 |") == 2  # both tables; the tiny BERT's head: 32 x 2 + 2
    assert (tmp_path / "out" / "attempt" / "summary.md").is_file()

    # The model tested on GLUE's split is the one a run trained under GLUE's split gives (the same rows, the same
    # seed): its test metrics are that run's.
    rte = next(p for p in cross if p.name.startswith("RTE__linear"))
    trained = json.loads(rte.read_text())["trained_as"]
    config = _config(trained)
    cfg = RunConfig.from_dict({**config, "data": {**config["data"], "split_rule": "glue"}})
    twin = train(cfg, tmp_path / "twin", progress=False)
    assert twin["metrics"] == pytest.approx(json.loads(rte.read_text())["metrics"])
    assert twin["test_total"] == json.loads(rte.read_text())["test_total"] == 80  # the whole generated dev set


def _config(run_dir: str) -> dict:
    from vpeft.rundir import RunDir

    return RunDir(run_dir).read_config()
