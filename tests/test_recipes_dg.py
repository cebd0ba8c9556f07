"""The domain-generalisation and few-shot recipes (issue 17): ``dtl_dg`` (one lr, picked on held-out ImageNet
training images), ``dtl_dg_published`` (the authors' lr per target), ``noah_dg``, ``dtl_fewshot`` and
``dtl_plus_fewshot`` (an lr per dataset and shot, ``tasks.<task>.shots.<k>``). Each loads, expands and reads a
generated copy of the authors' folder layouts; the values are those of ../shared/design/PROTOCOLS.md section (d)
and of the authors' scripts (hard-coded below, and parsed from PROTOCOLS.md when it is there). No training."""

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY
from PIL import Image

from vpeft.bench import expand, load_experiment, load_recipe
from vpeft.bench.experiment import list_recipes
from vpeft.config import DataConfig
from vpeft.data.entries import entries_for
from vpeft.errors import ConfigError
from vpeft.targets import Target, check_target

REPO = Path(__file__).resolve().parents[1]
PROTOCOLS = REPO.parent / "shared" / "design" / "PROTOCOLS.md"
EXPERIMENTS = REPO / "benchmarks" / "experiments"
TARGETS = ("imagenetv2", "imagenet-sketch", "imagenet-adversarial", "imagenet-rendition")
FEWSHOT = ("fgvc-aircraft", "food101", "oxford-flowers102", "oxford-pets", "standford-cars")
SHOTS = (1, 2, 4, 8, 16)

# --- the published values ---------------------------------------------------------------------------------------------
# PROTOCOLS.md section (d), "DTL's protocol": each target its own run with its own lr
# (heekhero/DTL train_scripts/vit/domain_generalization/<target>/train_dtl{,+}.sh, the same for DTL and DTL+).
DTL_DG_LR = {
    "imagenet": 1e-4,
    "imagenetv2": 1e-4,
    "imagenet-sketch": 5e-5,
    "imagenet-adversarial": 8e-5,
    "imagenet-rendition": 3e-5,
}
# Section (d), "All: batch 32, weight decay 0.05, warm-up 10, r = 2, beta = 100, M = 7, AMP; DTL+ kernel 3", trained
# "100 epochs" (timm's --epochs 100: 100 cosine + 10 warm-up epochs, train_vit_domain_genralization.py), "tested at the
# last epoch", "no mixup or smoothing", "timm RandAugment", "inception mean/std".
DTL_SHARED = {"batch_size": 32, "weight_decay": 0.05, "warmup_epochs": 10, "cosine_epochs": 100, "epochs": 110}
# Section (d), "NOAH's recipe": lr 0.005, batch 64, weight decay 1e-4, 100 epochs; supernet_train_prompt.py defaults:
# warm-up 10, RandAugment rand-m9-mstd0.5-inc1, smoothing 0.1, random erasing 0.25, mixup 0.8, cutmix 1.0; test
# ImageNet mean/std. (NOAH's loop runs --epochs epochs: 100, not timm's 100 + cool-down.)
NOAH = {
    "lr": 0.005,
    "batch_size": 64,
    "weight_decay": 1e-4,
    "epochs": 100,
    "warmup_epochs": 10,
    "randaug": "rand-m9-mstd0.5-inc1",
    "smoothing": 0.1,
    "erasing": 0.25,
    "mixup": 0.8,
    "cutmix": 1.0,
    "normalize": "imagenet",
}
# DTL's few-shot scripts, heekhero/DTL bf6c51e train_scripts/vit/few_shot/<dataset>-FS/train_dtl{,+}_shot_<k>.sh
# (--lr; every other flag is the same in all 50); section (d) quotes Aircraft 16-shot: lr 8e-3, batch 32, 100 epochs,
# warm-up 10, wd 0.05, validation every 10 epochs.
FEWSHOT_LR = {
    "dtl": {
        "fgvc-aircraft": (1e-3, 1e-3, 1e-3, 5e-3, 8e-3),
        "food101": (3e-3, 1e-3, 1e-3, 1e-3, 1e-3),
        "oxford-flowers102": (1e-3, 1e-3, 8e-3, 1e-3, 3e-3),
        "oxford-pets": (1e-3, 1e-3, 1e-3, 1e-3, 1e-3),
        "standford-cars": (1e-3, 1e-3, 3e-3, 3e-3, 3e-3),
    },
    "dtl_plus": {
        "fgvc-aircraft": (1e-3, 1e-3, 3e-3, 5e-3, 3e-3),
        "food101": (1e-3, 1e-3, 1e-3, 1e-3, 1e-3),
        "oxford-flowers102": (3e-3, 5e-3, 8e-3, 3e-3, 3e-3),
        "oxford-pets": (1e-3, 1e-3, 1e-3, 1e-3, 1e-3),
        "standford-cars": (1e-3, 1e-3, 3e-3, 3e-3, 5e-3),
    },
}
FEWSHOT_CLASSES = {  # train_vit_few_shot.py
    "fgvc-aircraft": 100,
    "food101": 101,
    "oxford-flowers102": 102,
    "oxford-pets": 37,
    "standford-cars": 196,
}


# --- generated copies of the authors' layouts -------------------------------------------------------------------------


def _image(path: Path, rng) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)


def _write(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{r}\n" for r in rows))


@pytest.fixture(scope="module")
def dg(tmp_path_factory) -> Path:
    """DTL's DG folder (README, data/domain_generalization.py): imagenet/annotations/ with the 16-shot lists of list
    seeds 0-2, val_heldout.list (docs/dg.md) and val_meta.list, images in imagenet/images/{train,val}; each target
    <target>/annotations/val_meta.list with its images under <target>/ (ImageNet-A's class folders hold spaces)."""
    root = tmp_path_factory.mktemp("dg") / "DG"
    rng = np.random.default_rng(0)
    inet = root / "imagenet"
    train = [f"n0{c}/n0{c}_{i}.JPEG {c}" for c in range(3) for i in range(4)]
    for row in train:
        _image(inet / "images" / "train" / row.rsplit(" ", 1)[0], rng)
    for s in (0, 1, 2):
        _write(inet / "annotations" / f"train_meta.list.num_shot_16.seed_{s}", train[s : s + 6])
    _write(inet / "annotations" / "val_heldout.list", train[9:])
    val = [f"ILSVRC2012_val_{i}.JPEG {i % 3}" for i in range(6)]
    for row in val:
        _image(inet / "images" / "val" / row.rsplit(" ", 1)[0], rng)
    _write(inet / "annotations" / "val_meta.list", val)
    for t in TARGETS:
        rows = [f"n0{c} great white/{t}_{c}.jpg {c}" for c in (0, 2)]
        for row in rows:
            _image(root / t / row.rsplit(" ", 1)[0], rng)
        _write(root / t / "annotations" / "val_meta.list", rows)
    return root


@pytest.fixture(scope="module")
def fgfs(tmp_path_factory) -> Path:
    """DTL's FGFS folder (README, data/fgfs.py): images in FGFS/<dataset>/, NOAH's lists in
    FGFS/few-shot_split/<dataset>/annotations/."""
    root = tmp_path_factory.mktemp("fgfs") / "FGFS"
    rng = np.random.default_rng(1)
    for ds in FEWSHOT:
        rows = [f"img/{ds}_{i}.jpg {i % 2}" for i in range(4)]
        for row in rows:
            _image(root / ds / row.rsplit(" ", 1)[0], rng)
        ann = root / "few-shot_split" / ds / "annotations"
        for k in SHOTS:
            for s in (0, 1, 2):
                _write(ann / f"train_meta.list.num_shot_{k}.seed_{s}", rows[:2])
        _write(ann / "val_meta.list", rows[2:3])
        _write(ann / "test_meta.list", rows[3:])
    return root


def _dg_exp(dg: Path, recipe: str, **extra) -> dict:
    return {"suite": "tasks", "data_root": str(dg), "tasks": ["imagenet"], "recipe": recipe, **extra}


def _published_exp(dg: Path) -> dict:
    # Every task of the published variant trains on the ImageNet folder and scores its own target (docs/dg.md).
    tasks = {t: {"root": "imagenet"} for t in DTL_DG_LR}
    return {"suite": "tasks", "data_root": str(dg), "tasks": tasks, "recipe": "dtl_dg_published"}


def _fewshot_exp(fgfs: Path, recipe: str, **extra) -> dict:
    return {"suite": "tasks", "data_root": str(fgfs), "tasks": list(FEWSHOT), "recipe": recipe, **extra}


# --- loading and expanding --------------------------------------------------------------------------------------------


def test_the_recipes_are_shipped_and_listed():
    names = list_recipes()
    for name in ("dtl_dg", "dtl_dg_published", "noah_dg", "dtl_fewshot", "dtl_plus_fewshot"):
        assert names[name], name
        r = load_recipe(name)
        assert "PROTOCOLS.md section (d)" in r["source"] and r["protocol"]


def test_dtl_dg_one_lr_for_every_target_picked_on_held_out_training_images(dg, tmp_path):
    runs = expand(load_experiment(_dg_exp(dg, "dtl_dg", list_seeds=[0, 1, 2])), tmp_path)
    assert [(r.label, r.list_seed) for r in runs] == [(m, s) for m in ("dtl", "dtl_plus") for s in (0, 1, 2)]
    for run in runs:
        d, t = run.config["data"], run.config["train"]
        assert {k: t[k] for k in DTL_SHARED} == DTL_SHARED
        assert (t["lr"], t["warmup_lr"], t["min_lr"], t["amp"], t["drop_path"], t["drop_last"]) == (
            1e-4,
            1e-7,
            1e-8,
            "fp16",
            0.0,
            True,
        )
        assert (t["mixup"], t["cutmix"], t["smoothing"], d["erasing"]) == (0.0, 0.0, 0.0, 0.0)
        assert (d["normalize"], d["augment"], d["randaug"], d["shot"]) == (
            "inception",
            "crop_flip_randaug",
            "rand-m9-mstd0.5-inc1",
            16,
        )
        # The last epoch's weights (one validation, after the last epoch) with a validation score to pick the lr.
        assert t["select"] == "val" and t["eval_every"] == t["epochs"]
        # Validation reads ImageNet training images outside the 16-shot lists, never a target or the test list.
        assert d["lists"]["val"] == "val_heldout.list" and d["image_roots"]["val"] == "images/train"
        assert d["lists"]["test"] == "val_meta.list" and d["image_roots"]["test"] == "images/val"
        # Every target in the same run, the headline over the classes present; roots under data_root.
        assert set(d["extra_tests"]) == set(TARGETS)
        for name, spec in d["extra_tests"].items():
            assert spec["root"] == str((dg / name).resolve()) and "classes" not in spec
    assert [r.config["method"].get("kernel") for r in runs] == [None] * 3 + [3] * 3
    # A sweep of the published lrs, one model per lr scoring every target: vpeft report --tune val picks.
    grid = {"train.lr": sorted(set(DTL_DG_LR.values()))}
    runs = expand(load_experiment(_dg_exp(dg, "dtl_dg", grid=grid)), tmp_path)
    assert sorted({r.config["train"]["lr"] for r in runs}) == grid["train.lr"]
    assert all(set(r.config["data"]["extra_tests"]) == set(TARGETS) for r in runs)


def test_dtl_dg_published_trains_one_run_per_target_with_its_lr(dg, tmp_path):
    runs = expand(load_experiment({**_published_exp(dg), "list_seeds": [0, 1, 2]}), tmp_path)
    assert len(runs) == 5 * 2 * 3  # targets x (DTL, DTL+) x list seeds
    for run in runs:
        d, t = run.config["data"], run.config["train"]
        assert t["lr"] == DTL_DG_LR[run.task], run.task
        assert {k: t[k] for k in DTL_SHARED} == DTL_SHARED and t["select"] == "last"
        assert Path(d["root"]) == (dg / "imagenet").resolve()
        # Each run scores its own target, over all 1,000 classes as DTL's code (ImageNet: the run's test split).
        want = set() if run.task == "imagenet" else {run.task}
        assert set(d["extra_tests"]) == want
        assert all(s["classes"] == "all" for s in d["extra_tests"].values())


def test_noah_dg_as_noahs_code_runs_it(dg, tmp_path):
    runs = expand(load_experiment(_dg_exp(dg, "noah_dg")), tmp_path)
    assert [r.label for r in runs] == ["noah-adapter", "noah-lora", "noah-vpt"]
    for run in runs:
        d, t = run.config["data"], run.config["train"]
        got = {**{k: t[k] for k in NOAH if k in t}, **{k: d[k] for k in NOAH if k in d}}
        assert got == NOAH
        assert (t["warmup_lr"], t["min_lr"], t["cosine_epochs"], t["mixup_prob"], t["mixup_switch_prob"]) == (
            1e-6,
            1e-5,
            None,
            1.0,
            0.5,
        )
        assert (t["amp"], t["drop_path"], t["drop_last"], t["select"]) == ("none", 0.1, True, "last")
        assert set(d["extra_tests"]) == set(TARGETS)
    adapter, lora, vpt = (r.config["method"] for r in runs)
    # experiments/Adapter/ViT-B_prompt_adapter_8.yaml, LoRA/ViT-B_prompt_lora_8.yaml, VPT/ViT-B_prompt_vpt_50.yaml.
    assert (adapter["name"], adapter["dim"], lora["name"], lora["rank"]) == ("adapter", 8, "lora", 8)
    assert (vpt["name"], vpt["length"], vpt["init"]) == ("vpt_deep", 50, "noah")


@pytest.mark.parametrize("method", ["dtl", "dtl_plus"])
def test_dtl_fewshot_takes_the_lr_of_each_dataset_and_shot(fgfs, tmp_path, method):
    recipe = "dtl_fewshot" if method == "dtl" else "dtl_plus_fewshot"
    exp = _fewshot_exp(fgfs, recipe, grid={"data.shot": list(SHOTS)}, list_seeds=[0, 1, 2])
    runs = expand(load_experiment(exp), tmp_path)
    assert len(runs) == 5 * 5 * 3
    got: dict = {}
    for run in runs:
        d, t = run.config["data"], run.config["train"]
        got.setdefault(run.task, {})[d["shot"]] = t["lr"]
        assert run.config["method"]["name"] == method
        assert (method == "dtl_plus") == (run.config["method"].get("kernel") == 3)
        assert d["fewshot_seed"] == run.list_seed and d["num_classes"] == FEWSHOT_CLASSES[run.task]
        assert {k: t[k] for k in DTL_SHARED} == DTL_SHARED
        assert (t["select"], t["eval_every"], t["amp"], t["drop_path"]) == ("val", 10, "fp16", 0.0)
        assert (d["normalize"], d["randaug"], t["mixup"], t["smoothing"]) == ("inception", "rand-m9-mstd0.5-inc1", 0, 0)
    assert got == {ds: dict(zip(SHOTS, lrs)) for ds, lrs in FEWSHOT_LR[method].items()}
    assert got["fgvc-aircraft"][16] == (8e-3 if method == "dtl" else 3e-3)  # section (d): DTL Aircraft 16-shot 8e-3


def test_per_shot_settings_follow_the_runs_shot_from_any_layer(fgfs, tmp_path):
    def lrs(**kw):
        kw.setdefault("list_seeds", [0])
        exp = load_experiment(
            {**_fewshot_exp(fgfs, "dtl_fewshot", tasks=["fgvc-aircraft"]), **kw.pop("file", {})}, **kw
        )
        return [(r.config["data"]["shot"], r.config["train"]["lr"]) for r in expand(exp, tmp_path)]

    # The recipe's list seeds, DTL's 0, 1, 2, unless the experiment or the command line gives its own.
    exp = load_experiment(_fewshot_exp(fgfs, "dtl_fewshot", tasks=["fgvc-aircraft"]))
    assert [(r.list_seed, r.config["data"]["fewshot_seed"]) for r in expand(exp, tmp_path)] == [(0, 0), (1, 1), (2, 2)]
    assert lrs() == [(16, 8e-3)]  # data.shot's default, 16
    assert lrs(file={"data": {"shot": 8}}) == [(8, 5e-3)]
    assert lrs(data={"shot": 4}, file={"data": {"shot": 8}}) == [(4, 1e-3)]  # the command line wins
    assert lrs(file={"methods": [{"label": "d2", "method": "dtl", "data": {"shot": 2}}]}) == [(2, 1e-3)]
    assert lrs(file={"tasks": {"fgvc-aircraft": {"data": {"shot": 8}}}}) == [(8, 5e-3)]
    # An explicit lr still beats the recipe's per-shot one.
    assert lrs(file={"data": {"shot": 8}, "train": {"lr": 0.1}}) == [(8, 0.1)]
    with pytest.raises(ConfigError, match=r"task 'fgvc-aircraft' has settings for data.shot 1, 2, 4, 8, 16, not 3"):
        lrs(data={"shot": 3})


def test_a_recipe_with_malformed_shots_fails_naming_it(tmp_path):
    def recipe(shots) -> str:
        path = tmp_path / "r.yaml"
        path.write_text(yaml.safe_dump({"tasks": {"t": {"shots": shots}}, "methods": ["linear"]}))
        return str(path)

    with pytest.raises(ConfigError, match=r"r.yaml: tasks.t.shots: key 'one' is not a shot count"):
        load_recipe(recipe({"one": {"train": {"lr": 1}}}))
    with pytest.raises(ConfigError, match=r"r.yaml: tasks.t.shots.2: expected a mapping of backbone, data, train"):
        load_recipe(recipe({2: {"trian": {"lr": 1}}}))
    with pytest.raises(ConfigError, match=r"r.yaml: tasks.t.shots must map a shot count"):
        load_recipe(recipe([1, 2]))


# --- the recipes read the authors' layouts ----------------------------------------------------------------------------


def _check_reads(run) -> dict:
    """Every split and target of a planned run resolves to list files and images that are there."""
    dc = DataConfig.from_dict(run.config["data"])
    counts = {}
    for split in ("train", "val", "test"):
        if split == "val" and run.config["train"]["select"] != "val":
            continue
        entries, images = entries_for(dc, split)
        assert entries and all((images / e.path).is_file() for e in entries), (split, images)
        counts[split] = len(entries)
    for name, spec in dc.extra_tests.items():
        _, entries, images = check_target(dc, Target.parse(name, spec), num_classes=3)
        assert entries and all((images / e.path).is_file() for e in entries), name
        counts[name] = len(entries)
    return counts


def test_the_dg_recipes_read_dtls_dg_folder(dg, tmp_path):
    for exp in (_dg_exp(dg, "dtl_dg", list_seeds=[2]), _dg_exp(dg, "noah_dg"), _published_exp(dg)):
        for run in expand(load_experiment(exp), tmp_path):
            counts = _check_reads(run)
            assert counts["train"] == 6 and counts["test"] == 6
            assert counts.get("val", 3) == 3
    run = expand(load_experiment(_dg_exp(dg, "dtl_dg", list_seeds=[2])), tmp_path)[0]
    assert [e.path for e in entries_for(DataConfig.from_dict(run.config["data"]), "train")[0]][0] == "n00/n00_2.JPEG"


def test_the_fewshot_recipes_read_dtls_fgfs_folder(fgfs, tmp_path):
    for recipe in ("dtl_fewshot", "dtl_plus_fewshot"):
        for run in expand(load_experiment(_fewshot_exp(fgfs, recipe, grid={"data.shot": [1]})), tmp_path):
            assert _check_reads(run) == {"train": 2, "val": 1, "test": 1}


@pytest.mark.parametrize("name", ["dtl_dg", "dtl_dg_published", "noah_dg", "dtl_fewshot"])
def test_the_shipped_experiments_plan(name, dg, fgfs, tmp_path, capsys):
    """benchmarks/experiments/<name>.yaml plans (models built on the meta device) with a tiny backbone."""
    from vpeft.cli import main

    root = fgfs if name == "dtl_fewshot" else dg
    path = str(EXPERIMENTS / f"{name}.yaml")
    args = ["bench", "run", path, "--data-root", str(root), "--backbone", TINY, "--out", str(tmp_path / "o")]
    assert main([*args, "--dry-run"]) == 0
    want = {"dtl_dg": 2 * 4 * 3, "dtl_dg_published": 5 * 2 * 3, "noah_dg": 3 * 3, "dtl_fewshot": 5 * 5 * 3}[name]
    assert f"{want} runs: 0 finished" in capsys.readouterr().out


# --- PROTOCOLS.md -----------------------------------------------------------------------------------------------------


def _section_d() -> str:
    if not PROTOCOLS.is_file():
        pytest.skip(f"{PROTOCOLS} is not there (the shared design notes are not part of the repository)")
    text = PROTOCOLS.read_text()
    start = text.index("## (d)")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def _prose(text: str) -> str:
    """``text`` with every run of white space (line breaks included) one space, for phrases that wrap."""
    return " ".join(text.split())


def _number(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    assert m, f"PROTOCOLS.md section (d) no longer says {pattern!r}"
    return float(m.group(1))


def test_the_hard_coded_values_are_protocols_md_section_d():
    d = _section_d()
    # DTL's per-target lr table.
    rows = [line for line in d.splitlines() if line.startswith("|")]
    header = next(r for r in rows if r.startswith("| target"))
    lr_row = next(r for r in rows if r.startswith("| lr"))
    names = [c.strip() for c in header.strip("|").split("|")][1:]
    values = [float(c) for c in [c.strip() for c in lr_row.strip("|").split("|")][1:]]
    full = {n: n if n.startswith("imagenet") else f"imagenet-{n}" for n in names}
    assert {full[n]: v for n, v in zip(names, values)} == DTL_DG_LR
    shared = _prose(d[d.index("All: batch") :].split("\n\n")[0])
    assert _number(r"batch (\d+)", shared) == DTL_SHARED["batch_size"]
    assert _number(r"weight decay ([\d.e-]+)", shared) == DTL_SHARED["weight_decay"]
    assert _number(r"warm-up (\d+)", shared) == DTL_SHARED["warmup_epochs"]
    assert _number(r"DTL\+ kernel (\d+)", shared) == load_recipe("dtl_dg")["defaults"]["options"]["dtl_plus"]["kernel"]
    dtl = _prose(d[d.index("**DTL's protocol**") :])
    assert _number(r"each trains (\d+) epochs", dtl) == DTL_SHARED["cosine_epochs"]
    assert "at the last epoch" in dtl and "no mixup or smoothing" in dtl and "inception" in dtl
    # NOAH's recipe.
    noah = _prose(d[d.index("**NOAH's recipe**") : d.index("**DTL's protocol**")])
    assert {
        "lr": _number(r"lr ([\d.e-]+)", noah),
        "batch_size": _number(r"batch (\d+)", noah),
        "weight_decay": _number(r"weight decay ([\d.e-]+)", noah),
        "epochs": _number(r"(\d+) epochs", noah),
        "warmup_epochs": _number(r"warm-up (\d+)", noah),
        "randaug": re.search(r"RandAugment `([^`]+)`", noah).group(1),
        "smoothing": _number(r"smoothing ([\d.]+)", noah),
        "erasing": _number(r"random erasing ([\d.]+)", noah),
        "mixup": _number(r"mixup ([\d.]+)", noah),
        "cutmix": _number(r"cutmix ([\d.]+)", noah),
        "normalize": "imagenet" if "ImageNet mean/std" in noah else None,
    } == NOAH
    # DTL's few-shot FGVC: the Aircraft 16-shot settings it quotes, and validation every 10 epochs.
    fs = _prose(d[d.index("**DTL's few-shot FGVC**") :])
    quoted = re.search(r"Aircraft 16-shot: lr ([\d.e-]+), batch (\d+), (\d+) epochs, warm-up (\d+), wd ([\d.]+)", fs)
    assert quoted, "PROTOCOLS.md section (d) no longer quotes DTL's Aircraft 16-shot settings"
    lr, batch, epochs, warmup, wd = map(float, quoted.groups())
    assert lr == FEWSHOT_LR["dtl"]["fgvc-aircraft"][SHOTS.index(16)]
    assert (batch, epochs, warmup, wd) == (32, DTL_SHARED["cosine_epochs"], 10, 0.05)
    assert (
        _number(r"validation every (\d+) epochs", fs) == load_recipe("dtl_fewshot")["defaults"]["train"]["eval_every"]
    )
