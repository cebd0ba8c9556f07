"""Recipe ``sam_polyp`` (issue 18): the GPS paper's SAM setting for polyp segmentation (Table 5), and the sweep suite
``seg`` that reads segfolder task folders with task ``segment``. The recipe loads and expands on a generated
segmentation task folder; its values are those of ../shared/design/PROTOCOLS.md section (c) (hard-coded below, and
checked against the file's text when it is there). No training."""

import math
import re
from pathlib import Path

import pytest
import torch

from vpeft.bench import expand, load_experiment, load_recipe
from vpeft.bench.experiment import SUITE_FORMATS, list_recipes
from vpeft.config import RunConfig
from vpeft.data.sources import resolve_splits
from vpeft.data.synth_seg import generate_seg
from vpeft.engine.optim import lr_at
from vpeft.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
PROTOCOLS = REPO.parent / "shared" / "design" / "PROTOCOLS.md"

# PROTOCOLS.md section (c), "Loss and recipe": "Adam for GPS, AdamW for the others (train_sam_gps.sh), lr 2e-4, no
# weight decay; cosine over 20 epochs to 1e-7 (SAM/train.py:115); batch 1 at 1024²; horizontal flip only; ImageNet
# mean/std (SAM/datasets/wrappers.py)"; loss "BCE with logits + (1 − soft IoU from sigmoids, per image, batch mean)".
# "Model": "SAM ViT-B (sam_vit_b_01ec64.pth)". Defects table: "a validation split from training data, or the last
# epoch" (never the test split); "standard Dice and IoU ... the official form only as metric=official".
TRAIN = {
    "batch_size": 1,
    "lr": 2e-4,
    "weight_decay": 0.0,
    "epochs": 20,
    "min_lr": 1e-7,
    "warmup_epochs": 0,
    "sched_unit": "epoch",
    "select": "val",
    "amp": "none",
}
DATA = {"format": "segfolder", "img_size": 1024, "normalize": "imagenet", "augment": "none"}
TASK = {"name": "segment", "loss": "bce_iou", "metric": "standard", "flip": True}
OPTIMIZER = {"gps": "adam", "linear": "adamw", "full": "adamw", "bitfit": "adamw", "adapter": "adamw"}
OPTIMIZER.update({"ssf": "adamw", "lora": "adamw"})
METHODS = {"linear": "linear", "full": "full", "bitfit": "bitfit", "adapter": "adapter", "ssf": "ssf"}
METHODS.update({"lora": "lora", "gps": "linear"})  # GPS: the decoder-only model plus the selection


@pytest.fixture(scope="module")
def seg_root(tmp_path_factory) -> Path:
    """A folder of one generated segfolder task, named as Kvasir-SEG's."""
    root = tmp_path_factory.mktemp("seg")
    generate_seg(root / "kvasir_seg", n_test=4)
    return root


@pytest.fixture(scope="module")
def runs(seg_root, tmp_path_factory):
    exp = load_experiment({"suite": "seg", "data_root": str(seg_root), "recipe": "sam_polyp"})
    return {r.label: r for r in expand(exp, tmp_path_factory.mktemp("out"))}


def test_recipe_is_shipped_and_names_its_sources():
    assert "sam_polyp" in list_recipes() and SUITE_FORMATS["seg"] == "segfolder"
    r = load_recipe("sam_polyp")
    assert "PROTOCOLS.md section (c)" in r["source"]
    # The protocol says what of the release it does not copy.
    text = " ".join(r["protocol"].split())
    for phrase in ("test split", "chosen on the validation split", "false positives", "task.metric=official"):
        assert phrase in text, phrase


def test_every_run_has_the_authors_setting(runs, seg_root):
    assert sorted(runs) == sorted(METHODS)
    for label, run in runs.items():
        c = run.config
        assert c["backbone"]["spec"] == "sam:vit_b", label
        assert {k: c["train"][k] for k in TRAIN} == TRAIN, label
        assert c["train"]["cosine_epochs"] is None  # the cosine spans train.epochs: 20
        assert c["train"]["optimizer"] == OPTIMIZER[label], label
        assert {k: c["data"][k] for k in DATA} == DATA, label
        assert {k: c["task"][k] for k in TASK} == TASK, label
        assert c["objective"] == {"name": "seg", "loss": "bce_iou"}, label  # the task's own loss
        assert c["method"]["name"] == METHODS[label], label
        assert c["data"]["root"] == str((seg_root / "kvasir_seg").resolve())
        cfg = RunConfig.from_dict(c)
        # trained on train.txt, the epoch chosen on val.txt, tested on test.txt: never a choice on the test split
        assert resolve_splits(cfg.data, cfg.train.select) == ("train", "val", "test"), label
    sel = runs["gps"].config["selector"]
    assert (sel["name"], sel["loss"], sel["norm_bias"], sel["k"]) == ("gps", "task", "outside_blocks", 1)
    assert all(runs[x].config.get("selector") is None for x in runs if x != "gps")


def test_the_schedule_is_the_releases_cosine_annealing(runs):
    # SAM/train.py: CosineAnnealingLR(optimizer, epoch_max=20, eta_min=1e-7), stepped once per epoch.
    cfg = RunConfig.from_dict(runs["full"].config).train
    opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=2e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20, eta_min=1e-7)
    for epoch in range(20):
        want = 1e-7 + (2e-4 - 1e-7) * (1 + math.cos(math.pi * epoch / 20)) / 2  # the closed form
        assert lr_at(epoch, cfg) == pytest.approx(want, rel=1e-12)
        assert lr_at(epoch, cfg) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        sched.step()


def test_the_experiment_may_replace_the_recipes_task(seg_root, tmp_path):
    exp = load_experiment(
        {"suite": "seg", "data_root": str(seg_root), "recipe": "sam_polyp", "task": "segment:metric=official"},
        methods=["linear"],
    )
    (run,) = expand(exp, tmp_path)
    assert run.config["task"]["metric"] == "official" and run.config["data"]["img_size"] == 1024


def test_suite_seg_finds_segfolder_task_folders_and_segments(seg_root, tmp_path):
    generate_seg(seg_root / "other", seed=1, n_test=4)
    (seg_root / "not_a_task").mkdir(exist_ok=True)
    exp = load_experiment(
        {"suite": "seg", "data_root": str(seg_root), "backbone": {"spec": "sam:tiny"}, "methods": ["linear"]}
    )
    specs = expand(exp, tmp_path)
    assert [s.task for s in specs] == ["kvasir_seg", "other"]
    for s in specs:
        assert s.config["task"]["name"] == "segment" and s.config["data"]["format"] == "segfolder"
    with pytest.raises(ConfigError, match="no segfolder task folder for nope"):
        expand(
            load_experiment({"suite": "seg", "data_root": str(seg_root), "tasks": ["nope"], "methods": ["linear"]}),
            tmp_path,
        )


@pytest.mark.skipif(not PROTOCOLS.is_file(), reason="../shared/design/PROTOCOLS.md is not beside the checkout")
def test_the_values_are_those_of_protocols_md():
    text = PROTOCOLS.read_text()
    section = text[text.index("## (c)") : text.index("## (d)")]
    flat = " ".join(section.split())
    for phrase in (
        "Adam for GPS, AdamW for the others",
        "lr 2e-4, no weight decay",
        "cosine over 20 epochs to 1e-7",
        "batch 1 at 1024²",
        "horizontal flip only",
        "ImageNet mean/std",
        "sam_vit_b_01ec64.pth",
    ):
        assert phrase in flat, phrase
    assert re.search(r"BCE with logits \+ \(1 − soft IoU", flat)
