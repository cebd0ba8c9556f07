"""Recipe ``maple`` and sweep suite ``coop`` (issue 19): MaPLe's few-shot setting on CLIP ViT-B/16 (the GIST paper's
Table 4) with zero-shot and MaPLe + GIST, over CoOp-layout task folders with task ``clip_classify``. The recipe
expands on generated CoOp-layout tasks; its values are PROTOCOLS.md section (b)'s (hard-coded below); Dassl's constant
warm-up schedule by hand; a small sweep of the suite runs end to end on a tiny CLIP. No real weights."""

import math
from pathlib import Path

import pytest

from vpeft.bench import expand, load_experiment
from vpeft.config import RunConfig
from vpeft.data.entries import detect
from vpeft.data.synth_coop import COOP_TASKS, generate_coop
from vpeft.engine.optim import lr_at

# PROTOCOLS.md (b) "Config": batch 4; 224 px bicubic, CLIP mean/std, random resized crop and flip; SGD lr 0.0035,
# 5 epochs, cosine, one warm-up epoch at constant 1e-5; N_CTX 2, CTX_INIT "a photo of a", PROMPT_DEPTH 9, fp16;
# "Evaluation uses the last epoch's model". Dassl's SGD defaults: momentum 0.9, weight decay 5e-4.
TRAIN = {
    "optimizer": "sgd",
    "lr": 0.0035,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "batch_size": 4,
    "epochs": 5,
    "warmup_epochs": 1,
    "warmup_kind": "constant_prefix",
    "warmup_lr": 1e-5,
    "sched_unit": "epoch",
    "amp": "fp16",
    "select": "last",
}
DATA = {"format": "coop", "shot": 16, "normalize": "clip", "augment": "crop_flip", "img_size": 224}


@pytest.fixture(scope="module")
def coop_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coop")
    generate_coop(root, size=32, n_test=20)
    return root


def test_the_generated_suite_is_in_coops_layout(coop_root):
    for task, dataset in COOP_TASKS.items():
        folder = coop_root / task
        assert (folder / f"split_zhou_{dataset}.json").is_file() and detect(folder) == ["coop"]
        lines = (folder / f"split_zhou_{dataset}.json").read_text().splitlines()
        assert lines[2].strip().startswith('["train_') and lines[2].strip().endswith("],")  # one row per line


def test_the_recipe_expands_to_maples_setting(coop_root, tmp_path):
    exp = load_experiment({"suite": "coop", "data_root": str(coop_root), "recipe": "maple"})
    runs = expand(exp, tmp_path)
    assert len(runs) == 2 * 3 * 3  # two tasks x zero-shot, maple, maple+gist x list seeds 1, 2, 3
    by_label = {}
    for r in runs:
        cfg = RunConfig.from_dict(r.config)
        by_label.setdefault(r.label, []).append(cfg)
        assert cfg.backbone.spec == "clip:vit_b16" and cfg.task.name == "clip_classify"
        for k, v in TRAIN.items():
            assert getattr(cfg.train, k) == v, k
        for k, v in DATA.items():
            assert getattr(cfg.data, k) == v, k
    assert sorted({c.data.fewshot_seed for c in by_label["maple"]}) == [1, 2, 3]
    assert [c.method.name for c in by_label["zero-shot"]][:1] == ["zeroshot"]
    maple = by_label["maple"][0].method
    assert (maple.n_ctx, maple.init, maple.depth) == (2, "a photo of a", 9)
    assert by_label["maple+gist"][0].objective.name == "gist"


def test_the_recipe_names_coops_templates_for_its_datasets(tmp_path):
    for task in ("oxford_flowers", "dtd", "ucf101"):
        (tmp_path / task).mkdir()
        (tmp_path / task / "split_zhou_X.json").write_text('{"train": [], "val": [], "test": []}\n')
    exp = load_experiment({"suite": "coop", "data_root": str(tmp_path), "recipe": "maple"})
    templates = {Path(r.config["data"]["root"]).name: r.config["task"].get("template") for r in expand(exp, tmp_path)}
    assert templates == {"oxford_flowers": "flowers", "dtd": "dtd", "ucf101": "ucf101"}


def test_dassls_constant_warmup_then_cosine_by_hand():
    """Dassl's ConstantWarmupScheduler around CosineAnnealingLR(T=5), stepped per epoch: 1e-5 in epoch 0, then the
    cosine from its start: 0.0035 in epoch 1, 0.0035 (1 + cos(pi k / 5)) / 2 in epoch 1 + k."""
    cfg = RunConfig.from_dict({"train": {**TRAIN, "min_lr": 0.0}}).train
    want = [1e-5] + [0.0035 * (1 + math.cos(math.pi * k / 5)) / 2 for k in range(4)]
    assert [lr_at(e, cfg) for e in range(5)] == pytest.approx(want, rel=1e-12)
    linear = RunConfig.from_dict({"train": {**TRAIN, "warmup_kind": "linear", "min_lr": 0.0}}).train
    assert lr_at(0, linear) == 1e-5 and lr_at(1, linear) == pytest.approx(0.0035 * (1 + math.cos(math.pi / 5)) / 2)


def test_a_coop_sweep_runs_and_reports_on_a_tiny_clip(coop_root, tmp_path, capsys):
    pytest.importorskip("open_clip", reason="the clip family needs the clip extra: pip install 'vpeft[clip]'")
    from vpeft.cli import main

    exp = tmp_path / "exp.yaml"
    exp.write_text(
        f"name: tiny-coop\nsuite: coop\ndata_root: {coop_root}\nrecipe: maple\n"
        "backbone: {spec: 'clip:tiny'}\n"
        "data: {shot: 2, img_size: 32}\n"
        "train: {epochs: 1, amp: none, batch_size: 8, device: cpu}\n"
        "list_seeds: [1]\n"
        "methods:\n  - {label: zero-shot, method: zeroshot}\n  - {label: maple, method: 'maple:depth=2'}\n"
        "  - {label: maple+gist, method: 'maple:depth=2', objective: gist}\n"
    )
    assert main(["bench", "run", str(exp), "--out", str(tmp_path / "r"), "--no-progress", "--report"]) == 0
    summary = (tmp_path / "r" / "report" / "summary.md").read_text()
    for label in ("zero-shot", "maple", "maple+gist"):
        assert label in summary
    for task in COOP_TASKS:
        assert task in summary
