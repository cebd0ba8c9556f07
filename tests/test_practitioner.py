"""Issue 21: the practitioner's path and the bad inputs that used to slip through."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest

from vpeft import ConfigError
from vpeft.bench.cli import BENCH_EPILOG
from vpeft.bench.runner import RayExecutor
from vpeft.engine.checkpoint import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def test_run_files_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644  # was 0600 (mkstemp's mode)
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600


def test_bench_help_names_files_that_exist():
    named = re.findall(r"vpeft bench run (\S+\.yaml)", BENCH_EPILOG)
    assert named
    for name in named:
        if name != "exp.yaml":  # the placeholder for one's own experiment
            assert (ROOT / name).is_file(), name


def test_gitignore_covers_what_the_readme_commands_create():
    lines = (ROOT / ".gitignore").read_text().splitlines()
    assert "/data/" in lines and "/results/" in lines and "runs/" in lines


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("prefix", ["", "ray://"])
def test_ray_address_without_a_cluster_fails_at_once(prefix):
    pytest.importorskip("ray")
    address = f"{prefix}127.0.0.1:{_closed_port()}"
    t0 = time.perf_counter()
    with pytest.raises(
        ConfigError, match=rf"no Ray cluster at --ray-address {re.escape(address)}.*takes no connection"
    ):
        list(RayExecutor(address=address).map([{"run_dir": "x"}]))
    assert time.perf_counter() - t0 < 10  # ray.init alone retries such an address for minutes


def test_ray_resources_that_no_run_can_get_fail_before_any_run():
    ex = RayExecutor(gpus=1, threads=1)
    with pytest.raises(
        ConfigError, match=r"asks for 1 GPU\(s\) \(--gpus-per-run\) but this machine's Ray instance has 0"
    ):
        ex._check_resources({"CPU": 2.0})
    with pytest.raises(ConfigError, match=r"asks for 4 CPU\(s\) \(--threads\)"):
        RayExecutor(threads=4)._check_resources({"CPU": 2.0})
    RayExecutor(gpus=0, threads=2)._check_resources({"CPU": 2.0})  # fits: no error


def test_ray_gpus_per_run_on_a_machine_without_a_gpu_fails_at_once(tmp_path):
    ray = pytest.importorskip("ray")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"asks for 1 GPU\(s\)"):
        list(RayExecutor(gpus=1, num_cpus=1).map([{"run_dir": str(tmp_path / "r")}]))
    assert not ray.is_initialized()  # started here, stopped here
    assert time.perf_counter() - t0 < 60


# ---- one writer per folder ------------------------------------------------------------------------------------------
HOLD = """
import sys, time
from vpeft.lock import FolderLock
lock = FolderLock(sys.argv[1], "run folder").acquire()
print("held", flush=True)
time.sleep(120)
"""


def _holder(folder: Path):
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_held_folder_refuses_a_second_writer_naming_the_holder_and_a_killed_holder_is_taken_over(tmp_path):
    from vpeft.errors import RunDirError
    from vpeft.lock import LOCK_FILE, FolderLock
    from vpeft.rundir import RunDir

    p = _holder(tmp_path / "run")
    try:
        with pytest.raises(
            RunDirError, match=rf"run folder .*run is in use by another vpeft process \(pid {p.pid} on "
        ):
            FolderLock(tmp_path / "run", "run folder").acquire()
        assert RunDir(tmp_path / "run").state == "empty"  # the lock file is no run file, nor foreign
    finally:
        p.kill()
        p.wait()
    assert (tmp_path / "run" / LOCK_FILE).is_file()  # a SIGKILL leaves the file, not the lock
    with FolderLock(tmp_path / "run") as lock:
        assert lock.stale["pid"] == p.pid
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # a clean end removes it
    with FolderLock(tmp_path / "run") as lock:
        assert lock.stale is None


def test_two_sweeps_into_one_folder(tmp_path, capsys):
    from vpeft.cli import main

    p = _holder(tmp_path / "sweep")
    try:
        rc = main(
            [
                "bench",
                "run",
                "--suite",
                "synth",
                "--method",
                "linear",
                "--seeds",
                "0",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "sweep"),
                "--no-progress",
            ]
        )
    finally:
        p.kill()
        p.wait()
    assert rc != 0
    err = capsys.readouterr().err
    assert f"sweep folder {tmp_path / 'sweep'} is in use by another vpeft process (pid {p.pid}" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "sweep" / "runs.jsonl").exists()  # refused before it planned anything


# ---- a sweep is checked before its first run ------------------------------------------------------------------------
def test_a_sweep_whose_runs_cannot_start_fails_before_any_run(tmp_path, capsys):
    from vpeft.cli import main

    # The README's former first bench command: the default iDAT teacher takes 224 px, the synth student 32 px.
    out = tmp_path / "s"
    rc = main(
        [
            "bench",
            "run",
            "--suite",
            "synth",
            "--method",
            "linear",
            "--method",
            "lora",
            "--preset",
            "idat-ps-kl",
            "--seeds",
            "0",
            "--tasks",
            "count",
            "shapes",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc != 0
    assert "2 of the 6 planned runs cannot start; nothing was run" in err
    assert re.search(
        r"idat-ps-kl: objective 'idat': the teacher 'vit_small_patch16_224' takes \(224, 224\) images "
        r"but the student takes \(32, 32\).*2 run\(s\)",
        err,
    )
    assert "lora:" not in err and not list((out / "runs").glob("*/config.yaml"))
    rc = main(
        [
            "bench",
            "run",
            "--suite",
            "synth",
            "--method",
            "linear",
            "--checkpoint",
            str(tmp_path / "no.npz"),
            "--seeds",
            "0",
            "--tasks",
            "count",
            "--out",
            str(tmp_path / "c"),
            "--dry-run",
        ]
    )
    assert rc != 0 and f"backbone.checkpoint: file {tmp_path / 'no.npz'} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        "vpeft bench run --suite synth --method linear --method lora --method adapter_ps --seeds 0 1 2 --out {out}",
        "vpeft bench run benchmarks/experiments/mini_vtab_idat.yaml --suite synth --out {out}",
    ],
)
def test_the_readme_bench_examples_plan_cleanly(tmp_path, command, monkeypatch):
    from vpeft.cli import main

    assert command.format(out="results/x").split(" --out")[0] in (ROOT / "README.md").read_text()
    monkeypatch.chdir(ROOT)
    argv = command.format(out=tmp_path / "s").split()[1:] + ["--tasks", "count", "--seeds", "0", "--dry-run"]
    assert main(argv) == 0


# ---- the trainer: one writer, honest weights, errors in one line, logs without carriage returns -------------------
def _cfg(root, **train):
    from conftest import TINY

    from vpeft.config import RunConfig

    return RunConfig.from_dict(
        {
            "backbone": {"spec": TINY},
            "method": "bitfit",
            "data": {"root": str(root), "train_split": "train800"},
            "train": {"epochs": 2, "batch_size": 8, "device": "cpu", **train},
        }
    )


def test_two_trainings_into_one_folder(tmp_path, small_task):
    from vpeft.engine.trainer import train
    from vpeft.errors import RunDirError

    p = _holder(tmp_path / "r")
    try:
        with pytest.raises(RunDirError, match=rf"run folder .*r is in use by another vpeft process \(pid {p.pid}"):
            train(_cfg(small_task), tmp_path / "r", progress=False)
        assert sorted(x.name for x in (tmp_path / "r").iterdir()) == [".vpeft.lock"]  # nothing written
    finally:
        p.kill()
        p.wait()
    train(_cfg(small_task), tmp_path / "r", progress=False)  # the killed holder's lock is taken over
    assert (tmp_path / "r" / "result.json").is_file()
    assert not (tmp_path / "r" / ".vpeft.lock").exists()


def test_a_run_that_fails_to_build_leaves_no_folder_behind(tmp_path, small_task):
    from vpeft.config import RunConfig
    from vpeft.engine.trainer import train

    cfg = _cfg(small_task).to_dict()
    cfg["backbone"]["spec"] = "convnext_atto"
    cfg["method"] = "lora"
    with pytest.raises(ConfigError, match="no attention"):
        train(RunConfig.from_dict(cfg), tmp_path / "new" / "r", progress=False)
    assert not (tmp_path / "new" / "r").exists()


def test_a_random_backbone_is_said_at_the_start_and_in_the_result(tmp_path, small_task):
    from vpeft.config import BackboneConfig
    from vpeft.engine.trainer import train, weights_source

    with pytest.warns(UserWarning, match="has random weights"):
        r = train(_cfg(small_task), tmp_path / "r", progress=False)
    assert r["backbone_weights"] == "random" and any("random weights" in w for w in r["warnings"])
    assert weights_source(BackboneConfig(spec="vit_c10_small")) == "shipped"
    assert weights_source(BackboneConfig(spec="vit_c10_small", checkpoint="x.npz")) == "checkpoint"
    assert weights_source(BackboneConfig(spec="vit_tiny_patch16_224", pretrained=True)) == "hub"


@pytest.mark.parametrize("code", ["ENOSPC", "EROFS", "EACCES"])
def test_a_full_or_read_only_disk_is_one_line_and_keeps_what_was_written(tmp_path, small_task, monkeypatch, code):
    import errno

    from vpeft.engine import checkpoint
    from vpeft.engine.trainer import train
    from vpeft.errors import RunDirError

    first = train(_cfg(small_task), tmp_path / "r", progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()}
    real = checkpoint.os.replace

    def full(src, dst):
        if str(dst).endswith("result.json"):
            raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), str(dst))
        return real(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", full)
    with pytest.raises(RunDirError, match=rf"^cannot write .*result.json: {os.strerror(getattr(errno, code))}\. "):
        train(_cfg(small_task, lr=0.002), tmp_path / "r2", progress=False)
    assert not list((tmp_path / "r2").glob(".result.json.*"))  # no debris of the failed write
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == before and first["test_acc"] >= 0


@pytest.mark.parametrize("lr", ["nan", "inf", "1e300", "-1", "1e30"])
def test_an_absurd_learning_rate_is_one_line(lr, small_task, tmp_path, capsys):
    from conftest import TINY

    from vpeft.cli import main

    rc = main(
        [
            "train",
            "--data",
            str(small_task),
            "--backbone",
            TINY,
            "--method",
            "bitfit",
            "--lr",
            lr,
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    if lr == "1e30":  # it trains, and diverges at once
        assert "vpeft: error: loss is nan by epoch 1" in err and "lower the lr" in err
        assert not (tmp_path / "r" / "result.json").exists()
    else:
        assert "train option 'lr' must be a number > 0 within float32's range" in err and not (tmp_path / "r").exists()


def test_without_a_terminal_each_epoch_is_one_line(tmp_path, small_task, capsys):
    from vpeft.engine.trainer import train

    train(_cfg(small_task), tmp_path / "r", progress=True)  # pytest's stderr is no terminal
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("epoch")] == ["epoch 1/2", "epoch 2/2"]
    assert "\r" not in out + err


def test_a_run_records_the_class_names_its_data_gives(tmp_path, small_task):
    from vpeft.engine.trainer import train

    assert train(_cfg(small_task), tmp_path / "a", progress=False)["class_names"] is None  # plain numbers
    (small_task / "classes.txt").write_text("0 ant\n1 bee\n2 cat\n")
    r = train(_cfg(small_task), tmp_path / "b", progress=False)
    assert r["class_names"] == ["ant", "bee", "cat"] and r["protocol"]["split"] is None  # its own splits
