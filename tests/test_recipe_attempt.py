"""Recipe ``attempt_glue`` (issue 20): ATTEMPT's GLUE setting on T5-base (the GIST paper's Table 3) with full
fine-tuning, ATTEMPT's adapters and adapters + GIST, over GLUE task folders (suite ``glue``). The recipe's values are
PROTOCOLS.md section (a)'s (hard-coded below); transformers' linear schedule with 500 warm-up steps by hand; a small
sweep of the recipe runs end to end on a tiny T5 over generated RTE and STS-B folders. No real weights."""

import json
from pathlib import Path

import pytest

from vpeft.bench import expand, load_experiment
from vpeft.config import RunConfig
from vpeft.data.synth_text import generate_glue
from vpeft.engine.optim import lr_at

# PROTOCOLS.md (a) "Recipe": batch 32, source length 256, lr 3e-4, 20 epochs, 500 warm-up steps; evaluation each
# epoch, the best model kept; HF Trainer defaults: AdamW, linear decay, weight decay 0.
TRAIN = {
    "optimizer": "adamw",
    "lr": 3e-4,
    "weight_decay": 0.0,
    "batch_size": 32,
    "epochs": 20,
    "warmup_steps": 500,
    "warmup_lr": 0.0,
    "schedule": "linear",
    "min_lr": 0.0,
    "sched_unit": "step",
    "select": "val",
}
# ATTEMPT's adapters: after self-attention and feed-forward, hidden 24, gelu_new, default init, layer norms trained
# (1,855,104 on T5-base: tests/test_t5.py counts this spec on the meta device).
ADAPTER = "adapter:position=sublayers,dim=24,act=gelu_new,init=default,train_norms=true"


@pytest.fixture(scope="module")
def glue_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("glue")
    generate_glue(root, seed=0)
    return root


def test_the_recipe_expands_to_attempts_setting(glue_root, tmp_path):
    cola = tmp_path / "data" / "CoLA"
    cola.mkdir(parents=True)
    for f in ("train.tsv", "dev.tsv"):
        (cola / f).write_text("src\t1\t\tA sentence .\n")
    for task in ("RTE", "STS-B"):
        (tmp_path / "data" / task).symlink_to(glue_root / task)
    exp = load_experiment({"suite": "glue", "data_root": str(tmp_path / "data"), "recipe": "attempt_glue"})
    runs = expand(exp, tmp_path)
    assert len(runs) == 3 * 4  # CoLA, RTE, STS-B x full, adapter, adapter-scored, adapter+gist (one seed)
    for r in runs:
        cfg = RunConfig.from_dict(r.config)
        assert cfg.backbone.spec == "t5:base:max_length=256"
        assert (cfg.data.format, cfg.data.split_rule, cfg.data.split_seed) == ("glue", "attempt", 42)
        for k, v in TRAIN.items():
            assert getattr(cfg.train, k) == v, k
        task = Path(r.config["data"]["root"]).name
        assert cfg.task.name == ("text2text_regress" if task == "STS-B" else "text2text")
        if task == "CoLA":
            assert cfg.task.primary == "mcc"
        if task == "STS-B":
            assert cfg.task.rounding == "attempt" and cfg.task.outputs == 51
        method = r.config["method"]
        spec = method if isinstance(method, str) else method["name"]
        if r.label != "full":
            assert cfg.method.name == "adapter" and (cfg.method.position, cfg.method.dim) == ("sublayers", 24)
            assert (cfg.method.act, cfg.method.init, cfg.method.train_norms) == ("gelu_new", "default", True)
        else:
            assert spec == "full"
        prediction = {"full": "generation", "adapter": "generation", "adapter-scored": "scoring"}
        if r.label in prediction:
            assert cfg.objective.name == "lm" and cfg.objective.prediction == prediction[r.label]
        else:
            assert cfg.objective.name == "gist" and cfg.objective.cls_loss == "lm"
            assert (cfg.objective.temperature, cfg.objective.mu, cfg.objective.lam) == (3.0, 0.5, 0.75)


def test_the_schedule_is_transformers_linear_with_500_warmup_steps_by_hand():
    """get_linear_schedule_with_warmup(500, total): lr * t / 500 for t < 500, then lr * (total - t) / (total - 500)."""
    cfg = RunConfig.from_dict({"train": TRAIN}).train
    per = 78  # RTE under ATTEMPT's split: 2,490 training pairs, batch 32, the last batch kept -> 78 steps an epoch
    total = 20 * per
    assert lr_at(0, cfg, per) == 0.0 and lr_at(250, cfg, per) == pytest.approx(1.5e-4, rel=1e-12)
    assert lr_at(500, cfg, per) == pytest.approx(3e-4, rel=1e-12)
    assert lr_at(1030, cfg, per) == pytest.approx(3e-4 * (total - 1030) / (total - 500), rel=1e-12)
    assert lr_at(total - 1, cfg, per) == pytest.approx(3e-4 / (total - 500), rel=1e-9)


def test_a_small_sweep_of_the_recipe_runs_and_reports_table_3s_layout(glue_root, tmp_path):
    pytest.importorskip("transformers", reason="the t5 family needs the text extra: pip install 'vpeft[text]'")
    from vpeft.cli import main

    exp = tmp_path / "exp.yaml"
    exp.write_text(
        f"name: tiny-attempt\nsuite: glue\ndata_root: {glue_root}\nrecipe: attempt_glue\n"
        "backbone: {spec: 't5:tiny:max_length=48'}\n"
        "data: {max_train: 32}\n"
        "train: {epochs: 1, batch_size: 16, warmup_steps: 3, device: cpu}\n"
    )
    assert main(["bench", "run", str(exp), "--out", str(tmp_path / "r"), "--no-progress", "--report"]) == 0
    summary = (tmp_path / "r" / "report" / "summary.md").read_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in summary.splitlines() if line.startswith("| `")}
    assert set(rows) == {"full", "adapter", "adapter-scored", "adapter+gist"}
    header = next(line for line in summary.splitlines() if line.startswith("| method"))
    assert "RTE" in header and "STS-B" in header and "mean" in header
    results = [json.loads(p.read_text()) for p in (tmp_path / "r" / "runs").glob("*/result.json")]
    stsb = [r for r in results if r["primary_metric"] == "pearson"]
    assert len(results) == 8 and len(stsb) == 4
    assert all(r["num_outputs"] == 51 and set(r["metrics"]) == {"pearson", "spearman", "mae", "mse"} for r in stsb)
    assert all(r["selected_epoch"] == 1 and "linear, warmup 3 steps" in r["protocol"]["schedule"] for r in results)
