"""The trainer's GPU-minded data path, checked on the CPU: device batches, sharding, evaluation, host reads, resume
state cadence, selection cadence, peak-memory bookkeeping and the run identity of options added later."""

import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vpeft.config import RunConfig, run_identity
from vpeft.data.loader import DeviceData
from vpeft.data.vtab import ImageDataset
from vpeft.engine import trainer as trainer_mod
from vpeft.engine.trainer import train
from vpeft.errors import ConfigError

SMALL = "vit_tiny_patch16_224:img_size=16,patch_size=8,embed_dim=16,depth=1,num_heads=2"


class Killed(Exception):
    pass


def cfg_for(root, method="bitfit", **train_opts):
    t = {"epochs": 3, "batch_size": 8, "lr": 1e-2, "device": "cpu", **train_opts}
    return RunConfig.from_dict({"backbone": {"spec": SMALL}, "method": method, "data": {"root": str(root)}, "train": t})


def dataset(n=11):
    g = torch.Generator().manual_seed(0)
    return ImageDataset(torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8, generator=g), torch.arange(n), "mem")


@pytest.mark.parametrize("resident", [True, False])
def test_device_batches_are_the_indexed_batches_and_shards_cover_each_item_once(resident):
    ds = dataset(11)
    data = DeviceData(ds, torch.device("cpu"), resident=resident)
    order = torch.randperm(11, generator=torch.Generator().manual_seed(3))
    got = list(data.batches(4, order))
    assert [n for _, _, n in got] == [4, 4, 3]
    for i, (x, y, _) in enumerate(got):
        idx = order[4 * i : 4 * i + 4]
        assert torch.equal(x, ds.images[idx]) and torch.equal(y, ds.labels[idx])
    assert [len(y) for _, y, _ in data.batches(4, order, drop_last=True)] == [4, 4]
    assert data.num_batches(4) == 3 and data.num_batches(4, drop_last=True) == 2
    # three processes: every item exactly once, each batch split as batch[rank::world]
    seen = []
    for rank in range(3):
        for (x, y, n), (xf, yf, _) in zip(data.batches(4, order, shard=(rank, 3)), got):
            assert torch.equal(y, yf[rank::3]) and torch.equal(x, xf[rank::3]) and n == len(yf)
            seen += y.tolist()
    assert sorted(seen) == list(range(11))


def test_sharded_evaluation_counts_add_up_to_the_whole(small_task):
    from vpeft.data.vtab import load_split
    from vpeft.run import build_model, evaluate

    cfg = cfg_for(small_task)
    model, objective = build_model(cfg, 3)
    ds = load_split(small_task, "test", (16, 16))
    whole = evaluate(model, objective, ds, 5, "inception", "cpu")
    parts = [evaluate(model, objective, ds, 5, "inception", "cpu", shard=(r, 2)) for r in range(2)]
    assert sum(p[1] for p in parts) == whole[1] and sum(p[2] for p in parts) == whole[2] == len(ds)


class HostReads(TorchDispatchMode):
    """Counts reads of a tensor's value by the host (``.item()``, ``float(t)``, ``int(t)``): each one waits for the
    device on a GPU."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_the_training_loop_reads_nothing_from_the_device_per_step(small_task, tmp_path):
    # SGD reads no step counters: every host read here is the trainer's own
    def reads(batch_size, out):
        with HostReads() as mode:
            train(
                cfg_for(small_task, method="linear", optimizer="sgd", batch_size=batch_size, epochs=2, log_every=1000),
                out,
                progress=False,
            )
        return mode.count

    few_steps, many_steps = reads(12, tmp_path / "a"), reads(3, tmp_path / "b")  # 2 vs 8 steps per epoch
    assert many_steps == few_steps


def test_resume_state_is_written_every_save_every_epochs_and_a_kill_loses_nothing(small_task, tmp_path):
    straight = train(cfg_for(small_task, epochs=5, drop_path=0.1), tmp_path / "a", progress=False)
    cfg = cfg_for(small_task, epochs=5, drop_path=0.1, save_every=2)
    saved = []

    def kill_after_3(epoch, entry):
        saved.append(
            torch.load(tmp_path / "b" / "state.pt", weights_only=True)["epoch"]
            if (tmp_path / "b" / "state.pt").exists()
            else None
        )
        if epoch == 3:
            raise Killed()

    with pytest.raises(Killed):
        train(cfg, tmp_path / "b", progress=False, on_epoch_end=kill_after_3)
    assert saved == [None, 2, 2]
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False)
    assert resumed["test_acc"] == straight["test_acc"] and resumed["protocol"]["save_every"] == 2
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in p.read_text().splitlines()]  # noqa
    assert strip(tmp_path / "a" / "log.jsonl") == strip(tmp_path / "b" / "log.jsonl")
    assert straight["protocol"]["save_every"] == "auto"


def test_the_selection_split_is_evaluated_every_eval_every_epochs_and_after_the_last(small_task, tmp_path):
    r = train(cfg_for(small_task, epochs=5, select="val", eval_every=2), tmp_path / "r", progress=False)
    log = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert ["val_acc" in e for e in log] == [False, True, False, True, True]
    assert r["selected_epoch"] in (2, 4, 5)
    with pytest.raises(ConfigError, match="eval_every"):
        cfg_for(small_task, eval_every=0)
    with pytest.raises(ConfigError, match="save_every"):
        cfg_for(small_task, save_every=-1)


def test_peak_memory_is_reset_after_the_selection_pass_and_for_every_run(small_task, tmp_path, monkeypatch):
    events = []

    class FakePeak:  # stands in for the CUDA allocator's statistics
        def __init__(self, device):
            pass

        def reset(self):
            events.append("reset")

        def read(self):
            events.append("read")
            return {"cuda_peak_allocated": 123, "cuda_peak_reserved": 456}

    real_select = trainer_mod._select

    def select(*a, **kw):
        events.append("select")
        return real_select(*a, **kw)

    def first_step(epoch, entry):
        events.append(f"epoch {epoch}")

    monkeypatch.setattr(trainer_mod, "PeakMemory", FakePeak)
    monkeypatch.setattr(trainer_mod, "_select", select)
    cfg = RunConfig.from_dict({**cfg_for(small_task, method="linear", epochs=2).to_dict(), "selector": "gps:k=1"})
    r = train(cfg, tmp_path / "gps", progress=False, on_epoch_end=first_step)
    assert events == ["reset", "select", "read", "reset", "epoch 1", "epoch 2", "read"]
    assert r["memory"]["cuda_peak_allocated"] == 123 and r["memory"]["cuda_peak_reserved"] == 456
    assert r["selection"]["selection_cuda_peak_allocated"] == 123
    events.clear()
    train(cfg_for(small_task, epochs=1), tmp_path / "plain", progress=False)  # the same process, the next run
    assert events == ["reset", "read"]


def test_the_cpu_run_records_its_device_and_no_tf32(small_task, tmp_path):
    r = train(cfg_for(small_task, epochs=1), tmp_path / "r", progress=False)
    assert r["device"] == {"type": "cpu"} and r["tf32"] is False and r["data_on_device"] is True
    assert "cuda_peak_allocated" not in r["memory"]


def test_options_added_later_keep_a_recorded_run_identity(small_task, tmp_path):
    from vpeft.bench.experiment import run_hash

    cfg = cfg_for(small_task, epochs=2)
    resolved = cfg.to_dict()
    old = json.loads(json.dumps(resolved))
    for key in ("eval_every", "save_every", "tf32", "data_on_device", "log_every"):
        del old["train"][key]  # a config written before these options existed
    assert run_hash(old) == run_hash(resolved)
    assert run_hash({**resolved, "train": {**resolved["train"], "save_every": 3, "log_every": 5}}) == run_hash(old)
    assert run_hash({**resolved, "train": {**resolved["train"], "tf32": False}}) != run_hash(old)
    assert run_hash({**resolved, "train": {**resolved["train"], "eval_every": 2}}) != run_hash(old)
    assert run_identity(old) == run_identity(resolved)
    # a run whose config.yaml predates the options resumes, and a changed execution-only option does not block it
    import yaml

    def kill(epoch, entry):
        raise Killed()

    with pytest.raises(Killed):
        train(cfg, tmp_path / "r", progress=False, on_epoch_end=kill)
    (tmp_path / "r" / "config.yaml").write_text(
        yaml.safe_dump(
            {**old, "data": yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["data"]}, sort_keys=False
        )
    )
    r = train(cfg_for(small_task, epochs=2, log_every=3), tmp_path / "r", resume=True, progress=False)
    assert r["selected_epoch"] == 2


def test_the_best_epochs_weights_are_restored_and_tested(small_task, tmp_path, monkeypatch):
    """select=val with eval_every: the weights tested and saved are the ones of the epoch with the best validation
    accuracy among those evaluated (every 2nd and the last), not the last epoch's (DTL's few-shot protocol)."""
    from safetensors.torch import load_file

    copies, epoch = [], [1]
    real = trainer_mod.trainable_state_dict

    def recording(*a, **kw):
        sd = real(*a, **kw)
        copies.append((epoch[0], {k: v.clone() for k, v in sd.items()}))
        return sd

    def advance(e, entry):
        epoch[0] = e + 1

    monkeypatch.setattr(trainer_mod, "trainable_state_dict", recording)
    cfg = cfg_for(small_task, epochs=6, select="val", eval_every=2, lr=0.05, save_every=100)
    r = train(cfg, tmp_path / "r", progress=False, on_epoch_end=advance)
    log = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    vals = {i + 1: e["val_acc"] for i, e in enumerate(log) if "val_acc" in e}
    assert sorted(vals) == [2, 4, 6]
    best = next(e for e in sorted(vals) if vals[e] == max(vals.values()))  # the first of the best
    assert r["selected_epoch"] == best and r["val_acc"] == vals[best]
    assert best < 6  # an earlier epoch than the last: the restore is what the saved weights show
    saved = load_file(tmp_path / "r" / "trainable.safetensors")
    at_best = [sd for e, sd in copies if e == best]
    assert at_best, "no copy of the trainable tensors was taken at the best epoch"
    assert all(torch.equal(saved[k], at_best[0][k]) for k in at_best[0])
    last = copies[-1][1]  # the last copy: the weights written after the final test, the best epoch's
    assert all(torch.equal(saved[k], last[k]) for k in last)
