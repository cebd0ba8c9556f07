import json
import math

import pytest
import torch
from conftest import TINY

from vpeft.config import RunConfig, TrainConfig
from vpeft.engine.optim import lr_at, param_groups
from vpeft.engine.trainer import train
from vpeft.errors import ConfigError, DataError, RunDirError

SMALL = "vit_tiny_patch16_224:img_size=16,patch_size=8,embed_dim=16,depth=1,num_heads=2"


def small_cfg(root, method="bitfit", **train):
    t = {"epochs": 3, "batch_size": 8, "lr": 1e-2, "warmup_epochs": 1}
    t.update(train)
    return RunConfig.from_dict({"backbone": {"spec": SMALL}, "method": method, "data": {"root": str(root)}, "train": t})


@pytest.mark.parametrize("unit", ["epoch", "step"])
def test_schedule_matches_timm_cosine(unit):
    from timm.scheduler import CosineLRScheduler

    cfg = TrainConfig(
        epochs=20, lr=1e-2, warmup_epochs=4, warmup_lr=1e-5, min_lr=1e-6, cosine_epochs=15, sched_unit=unit
    )
    per = 7 if unit == "step" else 1
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = CosineLRScheduler(
        opt,
        t_initial=15 * per,
        lr_min=1e-6,
        warmup_t=4 * per,
        warmup_lr_init=1e-5,
        t_in_epochs=True,
        warmup_prefix=False,
    )
    for t in range(20 * per):
        sched.step(t)
        assert math.isclose(lr_at(t, cfg, per), opt.param_groups[0]["lr"], rel_tol=1e-9), t


def test_linear_schedule_with_warmup_steps_matches_transformers():
    """ATTEMPT's schedule: transformers' get_linear_schedule_with_warmup (500 warm-up steps there), by hand and
    against transformers: lr * t / warmup, then lr * (total - t) / (total - warmup)."""
    cfg = TrainConfig(
        epochs=3, lr=3e-4, warmup_steps=5, warmup_lr=0.0, min_lr=0.0, schedule="linear", sched_unit="step"
    )
    per = 7  # 21 steps: 5 up, 16 down
    want = [3e-4 * t / 5 for t in range(5)] + [3e-4 * (21 - t) / 16 for t in range(5, 21)]
    got = [lr_at(t, cfg, per) for t in range(21)]
    assert got == pytest.approx(want, rel=1e-12, abs=0) and got[0] == 0.0 and got[5] == 3e-4
    transformers = pytest.importorskip("transformers")
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = transformers.get_linear_schedule_with_warmup(opt, num_warmup_steps=5, num_training_steps=21)
    for t in range(21):
        assert math.isclose(lr_at(t, cfg, per), opt.param_groups[0]["lr"], rel_tol=1e-9, abs_tol=1e-15), t
        opt.step()
        sched.step()
    with pytest.raises(ConfigError, match="warmup_steps' counts optimizer steps: it needs sched_unit=step"):
        TrainConfig(warmup_steps=5)
    assert TrainConfig(warmup_steps=0).to_dict()["schedule"] == "cosine"


def test_weight_decay_only_on_matrices_by_default():
    w, b = torch.nn.Parameter(torch.zeros(3, 3)), torch.nn.Parameter(torch.zeros(3))
    tok = torch.nn.Parameter(torch.zeros(1, 1, 3))
    groups = param_groups([("w", w), ("b", b), ("pos_embed", tok)], TrainConfig(weight_decay=0.1), {"pos_embed"})
    by_wd = {g["weight_decay"]: g["params"] for g in groups}
    assert by_wd[0.1] == [w] and by_wd[0.0] == [b, tok]
    groups = param_groups([("w", w), ("b", b)], TrainConfig(weight_decay=0.1, decay_1d=True))
    assert [g["weight_decay"] for g in groups] == [0.1]


@pytest.fixture(scope="module")
def count_run(synth_root, tmp_path_factory):
    """A real training run: tiny ViT trained on the generated counting task (4 classes, chance 25%).

    How long it takes is measured by benchmarks/synth_learnability.py (same model and recipe), not asserted here.
    """
    out = tmp_path_factory.mktemp("runs") / "count_full"
    cfg = RunConfig.from_dict(
        {
            "backbone": {"spec": "vit_tiny_patch16_224:img_size=32,patch_size=4,embed_dim=64,depth=4,num_heads=4"},
            "method": "full",
            "data": {"root": str(synth_root / "count")},
            "train": {"epochs": 12, "batch_size": 32, "lr": 1e-3, "warmup_epochs": 1, "seed": 0},
        }
    )
    return out, train(cfg, out, progress=False)


def test_training_run_learns(count_run):
    out, result = count_run
    assert result["test_acc"] > 40.0, result["test_acc"]  # chance is 25%
    for name in ("config.yaml", "log.jsonl", "result.json", "trainable.safetensors"):
        assert (out / name).is_file()
    assert not (out / "state.pt").exists()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == list(range(1, 13))
    assert {"loss", "ce", "lr", "train_acc"} <= set(log[0])
    assert log[-1]["loss"] < log[0]["loss"]
    mem = result["memory"]
    assert mem["train_memory_bytes"] == sum(
        mem[k] for k in ("saved_activation_bytes", "param_bytes", "grad_bytes", "optimizer_state_bytes")
    )
    assert result["protocol"]["select"] == "last" and result["protocol"]["train_split"] == "train800val200"
    assert result["versions"]["torch"] == torch.__version__


def test_eval_reproduces_recorded_accuracy(count_run, capsys):
    from vpeft.cli import main

    out, result = count_run
    assert main(["eval", "--run", str(out), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["acc"] == result["test_acc"] and got["recorded"] == result["test_acc"]


class Killed(Exception):
    pass


def test_resume_after_kill_gives_the_same_result(small_task, tmp_path):
    cfg = small_cfg(small_task, epochs=4, drop_path=0.1)
    straight = train(cfg, tmp_path / "a", progress=False)

    def kill_after_2(epoch, entry):
        if epoch == 2:
            raise Killed()

    with pytest.raises(Killed):
        train(cfg, tmp_path / "b", progress=False, on_epoch_end=kill_after_2)
    assert (tmp_path / "b" / "state.pt").is_file() and not (tmp_path / "b" / "result.json").exists()
    with pytest.raises(RunDirError, match="--resume"):
        train(cfg, tmp_path / "b", progress=False)
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False)
    assert resumed["test_acc"] == straight["test_acc"]
    from safetensors.torch import load_file

    a, b = (
        load_file(str(tmp_path / "a" / "trainable.safetensors")),
        load_file(str(tmp_path / "b" / "trainable.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda p: [{k: v for k, v in json.loads(l).items() if k != "seconds"} for l in p.read_text().splitlines()]  # noqa
    assert strip(tmp_path / "a" / "log.jsonl") == strip(tmp_path / "b" / "log.jsonl")
    # resuming a finished run returns its result; a changed config is refused
    assert train(cfg, tmp_path / "b", resume=True, progress=False)["test_acc"] == straight["test_acc"]
    with pytest.raises(RunDirError, match="config differs: method"):  # finished, but with another method
        train(
            small_cfg(small_task, method="linear", epochs=4, drop_path=0.1), tmp_path / "b", resume=True, progress=False
        )
    (tmp_path / "b" / "result.json").unlink()
    with pytest.raises(RunDirError, match="config differs: train.lr"):
        train(small_cfg(small_task, epochs=4, drop_path=0.1, lr=0.5), tmp_path / "b", resume=True, progress=False)


def test_a_config_error_found_late_leaves_the_run_directory_reusable(small_task, tmp_path):
    """GPS's k is checked against the layers only after the gradient pass: the run directory must not keep a config
    that makes the next attempt ask for --overwrite."""
    bad = RunConfig.from_dict({**small_cfg(small_task).to_dict(), "method": "linear", "selector": "gps:k=100000"})
    with pytest.raises(ConfigError, match="gps k=100000"):
        train(bad, tmp_path / "g", progress=False)
    assert not (tmp_path / "g" / "config.yaml").exists()
    good = RunConfig.from_dict({**small_cfg(small_task, epochs=1).to_dict(), "method": "linear", "selector": "gps:k=1"})
    assert train(good, tmp_path / "g", progress=False)["selection"]["selected"] > 0


def test_a_kill_during_an_atomic_write_does_not_block_the_resume(small_task, tmp_path):
    """SIGKILL while config.yaml was being written leaves '.config.yaml.<random>' (a sweep's resume once failed on
    it as 'not empty'): the debris is ignored and removed, other files still protect the directory."""
    out = tmp_path / "r"
    out.mkdir()
    (out / ".config.yaml.k1ll3d").write_text("half a config")
    (out / "bench.json").write_text("{}")
    result = train(small_cfg(small_task, epochs=1), out, resume=True, progress=False)
    assert result["test_acc"] >= 0 and not (out / ".config.yaml.k1ll3d").exists()
    assert (out / "bench.json").read_text() == "{}"
    other = tmp_path / "o"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match=r"cannot resume .*o: it holds no vpeft run config \(notes.txt\)"):
        train(small_cfg(small_task, epochs=1), other, resume=True, progress=False)
    assert (other / "notes.txt").read_text() == "mine"


def test_a_diverging_run_is_a_clear_error(small_task, tmp_path, capsys):
    from vpeft.cli import main
    from vpeft.errors import DivergedError

    with pytest.raises(DivergedError, match="lower the lr"):
        train(small_cfg(small_task, lr=1e30), tmp_path / "d", progress=False)
    assert (
        main(
            [
                "train",
                "--data",
                str(small_task),
                "--backbone",
                TINY,
                "--method",
                "bitfit",
                "--lr",
                "1e30",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "e"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "vpeft: error: loss is" in capsys.readouterr().err


def test_same_seed_same_result_other_seed_differs(small_task, tmp_path):
    r1 = train(small_cfg(small_task, seed=3), tmp_path / "s1", progress=False)
    r2 = train(small_cfg(small_task, seed=3), tmp_path / "s2", progress=False)
    from safetensors.torch import load_file

    a, b = (load_file(str(tmp_path / d / "trainable.safetensors")) for d in ("s1", "s2"))
    assert all(torch.equal(a[k], b[k]) for k in a) and r1["test_acc"] == r2["test_acc"]
    train(small_cfg(small_task, seed=4), tmp_path / "s3", progress=False)
    c = load_file(str(tmp_path / "s3" / "trainable.safetensors"))
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("select", ["val", "best-test"])
def test_model_selection_rules_are_recorded(small_task, tmp_path, select):
    with pytest.warns(UserWarning, match="best-test") if select == "best-test" else _nothing():
        result = train(small_cfg(small_task, select=select), tmp_path / select, progress=False)
    log = [json.loads(line) for line in (tmp_path / select / "log.jsonl").read_text().splitlines()]
    key = "val_acc" if select == "val" else "test_acc"
    best = max(range(len(log)), key=lambda i: (log[i][key], -i))
    assert result["selected_epoch"] == best + 1
    assert result["protocol"]["select"] == select
    if select == "val":
        assert result["protocol"]["train_split"] == "train800" and result["val_acc"] == log[best]["val_acc"]
    else:
        assert result["test_acc"] == log[best]["test_acc"] and "TEST" in result["warnings"][0]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_grad_accumulation_matches_full_batch(small_task, tmp_path):
    # SGD: Adam's g / sqrt(v) would amplify float summation-order noise in near-zero gradients
    kw = dict(method="full", epochs=2, optimizer="sgd", lr=0.05)
    a = train(small_cfg(small_task, **kw), tmp_path / "a", progress=False)
    b = train(small_cfg(small_task, grad_accum=4, **kw), tmp_path / "b", progress=False)
    from safetensors.torch import load_file

    wa, wb = (load_file(str(tmp_path / d / "trainable.safetensors")) for d in ("a", "b"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
    assert b["memory"]["batch_size"] == 2 and a["memory"]["batch_size"] == 8


def _finished_run(small_task, tmp_path):
    out = tmp_path / "run"
    train(small_cfg(small_task, epochs=1), out, progress=False)
    return out, {p.name: p.read_bytes() for p in out.iterdir()}


def _corrupt(kind, root):
    lines = (root / "train800val200.txt").read_text().splitlines()
    if kind == "missing-list":
        (root / "train800val200.txt").unlink()
        return DataError, r"missing list file .*train800val200.txt"
    if kind == "missing-image":
        (root / "images/train800/0003.png").unlink()
        return DataError, r"train800val200.txt:4: image .*0003.png does not exist"
    if kind == "corrupt-image":
        (root / "images/train800/0005.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        return DataError, r"train800val200.txt:6: cannot read image .*0005.png"
    if kind == "truncated-image":
        p = root / "images/train800/0006.png"
        p.write_bytes(p.read_bytes()[:60])
        return DataError, r"train800val200.txt:7: cannot read image .*0006.png"
    if kind == "label-range":
        lines[9] = lines[9].rsplit(" ", 1)[0] + " 7"
        (root / "train800val200.txt").write_text("\n".join(lines) + "\n")
        (root / "classes.txt").write_text("0 a\n1 b\n2 c\n")
        return DataError, r"train800val200.txt:10: label 7 is outside the class range 0..2"
    if kind == "bad-line":
        lines[2] = "just_a_path.png"
        (root / "train800val200.txt").write_text("\n".join(lines) + "\n")
        return DataError, r"train800val200.txt:3: expected '<relative path> <label>'"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["missing-list", "missing-image", "corrupt-image", "truncated-image", "label-range", "bad-line"]
)
def test_bad_data_fails_clearly_and_keeps_earlier_results(small_task, tmp_path, kind):
    out, before = _finished_run(small_task, tmp_path)
    err, pattern = _corrupt(kind, small_task)
    with pytest.raises(err, match=pattern):
        train(small_cfg(small_task, epochs=1), out, overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_bad_config_and_checkpoint_keep_earlier_results(small_task, tmp_path):
    out, before = _finished_run(small_task, tmp_path)
    with pytest.raises(ConfigError, match="unknown method 'lorra'"):
        RunConfig.from_dict({"method": "lorra"})
    with pytest.raises(ConfigError, match="has no option 'rank'"):
        RunConfig.from_dict({"method": "bitfit:rank=3"})
    from vpeft.errors import CheckpointError

    ck = tmp_path / "wrong.safetensors"
    from safetensors.torch import save_file

    from vpeft import create_backbone

    save_file({k: v.contiguous() for k, v in create_backbone(TINY, 3).model.state_dict().items()}, str(ck))
    cfg = small_cfg(small_task, epochs=1)
    cfg.backbone.checkpoint = str(ck)
    with pytest.raises(CheckpointError, match="wrong.safetensors does not match the backbone"):
        train(cfg, out, overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.skipif(
    not (SHARED := __import__("conftest").SHARED_DATA / "vtab1k" / "dtd_10cls").is_dir(),
    reason="../shared/data is not beside this checkout",
)
def test_trains_on_a_real_vtab_task(tmp_path):
    cfg = RunConfig.from_dict(
        {
            "backbone": {"spec": TINY},
            "method": "bitfit",
            "data": {"root": str(SHARED)},
            "train": {"epochs": 1, "batch_size": 64, "lr": 1e-3},
        }
    )
    result = train(cfg, tmp_path / "dtd", progress=False)
    assert result["num_classes"] == 10 and result["test_total"] > 0 and result["task"] == "dtd_10cls"
