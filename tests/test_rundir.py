"""The run folder (vpeft.rundir): its states, the debris of interrupted writes, the start checks, and its files."""

import pytest
import torch

from vpeft.bench.runner import run_state
from vpeft.engine import checkpoint
from vpeft.errors import RunDirError
from vpeft.rundir import RUN_FILES, SWEEP_FILES, RunDir

SAME = lambda saved: []  # noqa: E731 - a config_diff that finds the saved config the same


class Killed(BaseException):
    pass


def _killed_write(monkeypatch, path):
    """Write ``path`` through the atomic writer and kill it before the rename, as a SIGKILL would (no clean-up)."""

    def replace(a, b):
        raise Killed()

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    monkeypatch.setattr(checkpoint.os, "unlink", lambda p: None)
    with pytest.raises(Killed):
        checkpoint.atomic_write_text(path, "half")
    monkeypatch.undo()


def _fill(d, *names):
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / n).write_text("x")
    return RunDir(d)


def test_the_states_of_a_folder(tmp_path):
    assert RunDir(tmp_path / "missing").state == "empty" and RunDir(tmp_path / "missing").debris() == []
    assert _fill(tmp_path / "e").state == "empty"
    assert _fill(tmp_path / "s", "bench.json", "run.log").state == "empty"  # a sweep's files alone: not a run yet
    assert _fill(tmp_path / "p", "config.yaml", "log.jsonl").state == "partial"
    assert _fill(tmp_path / "sel", "selection.safetensors").state == "partial"
    assert _fill(tmp_path / "d", "config.yaml", "trainable.safetensors", "result.json").state == "done"
    assert _fill(tmp_path / "d2", "result.json", "notes.txt").state == "done"  # finished, whatever lies beside it
    assert _fill(tmp_path / "f", "config.yaml", "failed.json", "bench.json").state == "failed"
    assert _fill(tmp_path / "fd", "failed.json", "result.json").state == "done"  # a worker died after its result
    foreign = _fill(tmp_path / "o", "config.yaml", "notes.txt")
    assert foreign.state == "foreign" and foreign.foreign() == {"notes.txt"}


def test_the_sweep_view_of_the_states(tmp_path):
    """vpeft.bench's run_state, now read through RunDir: unchanged (a resume state makes a run 'partial')."""
    assert run_state(tmp_path / "none") == "pending"
    assert run_state(_fill(tmp_path / "c", "config.yaml", "log.jsonl").path) == "pending"
    assert run_state(_fill(tmp_path / "p", "config.yaml", "state.pt").path) == "partial"
    assert run_state(_fill(tmp_path / "f", "state.pt", "failed.json").path) == "failed"
    assert run_state(_fill(tmp_path / "d", "failed.json", "result.json").path) == "done"


@pytest.mark.parametrize("name", RUN_FILES + ("bench.json", "failed.json"))  # run.log is appended, not replaced
def test_the_debris_of_a_killed_write_of_any_file_is_recognised(tmp_path, monkeypatch, name):
    """Every file written atomically leaves ``.NAME.<random>`` when killed mid-write: debris, which leaves an empty
    folder empty and is cleared; a foreign dot-file stays foreign."""
    d = RunDir(tmp_path / "r")
    d.path.mkdir()
    _killed_write(monkeypatch, d / name)
    assert not (d / name).exists() and [p.name.startswith(f".{name}.") for p in d.path.iterdir()] == [True]
    assert len(d.debris()) == 1 and d.used() == set() and d.state == "empty"
    assert d.check_start(resume=False, overwrite=False, config_diff=SAME) is None
    (d / ".notes.txt.abc").write_text("mine")
    assert d.state == "foreign" and d.debris() != [] and d.foreign() == {".notes.txt.abc"}
    d.clear_debris()
    assert [p.name for p in d.path.iterdir()] == [".notes.txt.abc"]


def test_the_debris_of_a_sweep_record_no_longer_blocks_a_resume(tmp_path):
    """A kill while bench.json was written (before the run started) left '.bench.json.<random>', which the trainer
    took for someone else's file: '--resume' refused the folder and the sweep recorded the run as failed."""
    d = _fill(tmp_path / "r", ".bench.json.k1ll3d")
    assert d.check_start(resume=True, overwrite=False, config_diff=SAME) is None


def test_the_start_checks(tmp_path):
    diff = lambda saved: [] if saved == {"a": 1} else ["a: 1 -> 2"]  # noqa: E731
    empty = RunDir(tmp_path / "new")
    assert empty.check_start(False, False, diff) is None  # a new folder
    # killed before its config was written: only the selection is there, which a resume redoes or reuses
    assert _fill(tmp_path / "sel", "selection.safetensors").check_start(True, False, diff) is None
    with pytest.raises(RunDirError, match="not empty; pass --resume"):
        _fill(tmp_path / "sel2", "selection.safetensors").check_start(False, False, diff)

    run = RunDir(tmp_path / "run")
    run.prepare()
    run.write_config({"a": 1})
    assert run.state == "partial"
    with pytest.raises(RunDirError, match="not empty; pass --resume to continue it or --overwrite"):
        run.check_start(False, False, diff)
    assert run.check_start(False, True, diff) is None and run.check_start(True, False, diff) is None
    run.write_result({"test_acc": 50.0})
    assert run.check_start(True, False, diff) == {"test_acc": 50.0}  # already finished
    assert run.check_start(True, True, diff) is None  # resume with overwrite: trained again
    run.write_config({"a": 2})
    with pytest.raises(RunDirError, match=r"cannot resume .*run: its config differs: a: 1 -> 2"):
        run.check_start(True, False, diff)
    assert run.check_start(False, True, diff) is None  # a new run over it

    no_config = RunDir(tmp_path / "nc")
    no_config.prepare()
    no_config.write_result({"test_acc": 1.0})
    assert no_config.check_start(True, False, diff) == {"test_acc": 1.0}
    with pytest.raises(RunDirError, match=r"holds no vpeft run config \(log.jsonl, notes.txt\)"):
        _fill(tmp_path / "o", "notes.txt", "log.jsonl", ".config.yaml.x").check_start(True, False, diff)


def test_prepare_with_overwrite_removes_the_earlier_run_only(tmp_path):
    d = _fill(
        tmp_path / "r",
        "config.yaml",
        "log.jsonl",
        "state.pt",
        "trainable.safetensors",
        "result.json",
        "selection.safetensors",
        "bench.json",
        "notes.txt",
    )
    d.prepare(overwrite=True)
    assert sorted(p.name for p in d.path.iterdir()) == ["bench.json", "notes.txt", "selection.safetensors"]
    RunDir(tmp_path / "a" / "b").prepare()
    assert (tmp_path / "a" / "b").is_dir()


def test_every_file_reads_back_what_was_written(tmp_path):
    d = RunDir(tmp_path / "r")
    d.prepare()
    assert (d.read_result(), d.read_state(), d.read_selection(), d.read_failure(), d.read_bench()) == (
        None,
        None,
        None,
        None,
        {},
    )
    with pytest.raises(RunDirError, match="config.yaml is missing"):
        d.read_config()
    with pytest.raises(RunDirError, match="does not exist"):
        RunDir(tmp_path / "none").read_config()
    with pytest.raises(RunDirError, match="has no trainable.safetensors: the run did not finish"):
        d.read_trainable()
    d.write_config({"method": {"name": "lora", "r": 8}, "train": {"lr": 0.001}})
    assert d.read_config() == {"method": {"name": "lora", "r": 8}, "train": {"lr": 0.001}}
    assert (d / "config.yaml").read_text().startswith("method:")  # the keys in their order
    d.write_log([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}])
    assert (d / "log.jsonl").read_text() == '{"epoch": 1, "loss": 0.5}\n{"epoch": 2, "loss": 0.25}\n'
    d.save_state({"epoch": 1, "rng": torch.get_rng_state()})
    assert d.resumable and d.read_state()["epoch"] == 1
    d.drop_state()
    assert not d.resumable and d.read_state() is None
    d.save_selection({"w": torch.arange(3)}, {"selected": 3})
    tensors, info = d.read_selection()
    assert torch.equal(tensors["w"], torch.arange(3)) and info == {"selected": 3}
    (d / "selection.safetensors.json").unlink()  # a kill between the two writes: the pass is redone
    assert d.read_selection() is None
    model = torch.nn.Linear(2, 2)
    model.weight.requires_grad_(False)
    d.save_trainable(model, metadata={"method": "bitfit"})
    assert list(d.read_trainable()) == ["bias"] and torch.equal(d.read_trainable()["bias"], model.bias.detach())
    d.write_result({"test_acc": 12.5})
    d.write_bench({"label": "x"})
    d.write_failure({"error": "boom"})
    assert d.read_result() == {"test_acc": 12.5} and d.read_bench() == {"label": "x"}
    assert d.read_failure() == {"error": "boom"} and d.state == "done"
    d.clear_failure()
    assert d.read_failure() is None and not d.debris()


def test_every_write_goes_through_the_atomic_writer(tmp_path, monkeypatch):
    """A kill at each of RunDir's writes leaves the earlier file untouched and only debris beside it."""
    d = RunDir(tmp_path / "r")
    d.prepare()
    writes = [
        lambda: d.write_config({"a": 1}),
        lambda: d.write_log([{"epoch": 1}]),
        lambda: d.save_state({"e": 1}),
        lambda: d.save_selection({"w": torch.zeros(1)}, {}),
        lambda: d.save_trainable(torch.nn.Linear(1, 1)),
        lambda: d.write_result({}),
        lambda: d.write_bench({}),
        lambda: d.write_failure({}),
    ]
    for write in writes:
        write()
    before = {p.name: p.read_bytes() for p in d.path.iterdir()}
    for write in writes:
        monkeypatch.setattr(checkpoint.os, "replace", lambda a, b: (_ for _ in ()).throw(Killed()))
        monkeypatch.setattr(checkpoint.os, "unlink", lambda p: None)
        with pytest.raises(Killed):
            write()
        monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in d.path.iterdir() if not p.name.startswith(".")} == before
    assert len(d.debris()) == len(writes) and d.used() == set(before) - set(SWEEP_FILES)
    d.clear_debris()
    assert {p.name for p in d.path.iterdir()} == set(before)


@pytest.mark.parametrize("name", ["state.pt", "selection.safetensors"])
def test_a_corrupt_resume_file_is_named_and_nothing_is_deleted(tmp_path, name):
    from vpeft.errors import RunDirError
    from vpeft.rundir import RunDir

    run = RunDir(tmp_path / "r")
    run.prepare(overwrite=False)
    run.save_state({"epoch": 1})
    run.save_selection({"w": torch.zeros(2)}, {"k": 1})
    (run.path / name).write_bytes(b"garbage")
    before = sorted(p.name for p in run.path.iterdir())
    with pytest.raises(RunDirError, match=f"{name} cannot be read.*--overwrite"):
        run.read_state() if name == "state.pt" else run.read_selection()
    assert sorted(p.name for p in run.path.iterdir()) == before
