"""Device placement off the GPU: every collective on the process group's device (fake CUDA tensors), the test-set
shards, and the local executor's GPUs per worker (a fake device list, and the environment a spawned worker sees)."""

import json
import multiprocessing as mp
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode

from vpeft.bench.runner import LocalExecutor, visible_gpus, worker_gpus
from vpeft.engine import distributed
from vpeft.engine.distributed import Dist
from vpeft.errors import ConfigError

# --- collectives -----------------------------------------------------------------------------------------------------


@pytest.fixture
def collectives(monkeypatch):
    """Replace torch.distributed's collectives by recorders: (name, device) for every tensor they are given."""
    seen = []

    def recorder(name):
        def record(*args, **kwargs):
            for a in args:
                for t in a if isinstance(a, list) else [a]:
                    if isinstance(t, torch.Tensor):
                        seen.append((name, t.device))

        return record

    for name in (
        "all_reduce",
        "broadcast",
        "all_gather",
        "all_gather_into_tensor",
        "reduce_scatter",
        "gather",
        "scatter",
        "reduce",
        "all_to_all",
    ):
        monkeypatch.setattr(dist, name, recorder(name))
    return seen


@pytest.mark.parametrize("params_on", ["cuda:1", "cpu"])
def test_every_collective_runs_on_the_group_device(collectives, params_on):
    group = torch.device("cuda", 1)  # local rank 1 under nccl
    d = Dist(rank=1, world=2, local_rank=1, device=group)
    with FakeTensorMode():  # CUDA tensors without a GPU
        params = [
            torch.nn.Parameter(torch.zeros(3, 2, device=params_on)),
            torch.nn.Parameter(torch.ones(4, device=params_on)),
        ]
        params[0].grad = torch.ones(3, 2, device=params_on)  # params[1] has no gradient: it counts as zero
        d.broadcast_(params)
        d.sum_grads_(params)
        assert params[1].grad.device == torch.device(params_on) and params[1].grad.shape == (4,)
        t = torch.zeros(5, device=params_on)
        assert d.sum_tensor_(t) is t and t.device == torch.device(params_on)
        pred = torch.zeros(len(d.shard_range(7)), dtype=torch.long, device=group)
        assert d.gather_shards(pred, 7).shape == (7,)
        with pytest.raises(DataDependentOutputException):  # the sum's read back to the host, after the all-reduce
            d.sum_floats([1.0, 2.0])
    assert {dev for _, dev in collectives} == {group}, collectives
    names = [n for n, _ in collectives]
    assert names.count("broadcast") == 2 and names.count("all_reduce") == 3 and "all_gather" in names


def test_setup_takes_the_backends_device(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2"), monkeypatch.setenv("RANK", "1"), monkeypatch.setenv("LOCAL_RANK", "1")
    backend, calls = [], []
    monkeypatch.setattr(dist, "is_initialized", lambda: bool(backend))
    monkeypatch.setattr(dist, "init_process_group", lambda b: backend.append(b))
    monkeypatch.setattr(dist, "get_backend", lambda: backend[-1])
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(i))
    for cuda, device, want_backend, want in [
        (True, "cuda", "nccl", "cuda:1"),
        (True, "auto", "nccl", "cuda:1"),
        (True, "cpu", "gloo", "cpu"),
        (False, "auto", "gloo", "cpu"),
    ]:
        backend.clear()
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        d = distributed.setup(device)
        assert (backend, d.device, d.owns_group) == ([want_backend], torch.device(want), True), device
        assert (d.rank, d.world, d.local_rank) == (1, 2, 1)
    assert calls == [1, 1]
    backend[:] = ["nccl"]  # a group someone else started: its backend decides
    d = distributed.setup("cpu")
    assert d.device == torch.device("cuda", 1) and not d.owns_group


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_hold_every_item_once(world):
    for n in range(12):
        shards = [Dist(rank=r, world=world).shard_range(n) for r in range(world)]
        assert [i for s in shards for i in s] == list(range(n))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_gathered_shards_are_in_item_order(monkeypatch):
    n, world, rank = 10, 4, 2  # shards of 2, 3, 2, 3 items
    items = torch.arange(100, 100 + n)
    fed = []

    def all_gather(parts, t):  # what the other ranks send: their items, padded with junk to the same length
        fed.append(t.clone())
        for r, p in enumerate(parts):
            s = Dist(rank=r, world=world).shard_range(n)
            p.fill_(-1)[: len(s)] = items[s.start : s.stop]

    monkeypatch.setattr(dist, "all_gather", all_gather)
    d = Dist(rank=rank, world=world)
    mine = items[d.shard_range(n).start : d.shard_range(n).stop]
    assert torch.equal(d.gather_shards(mine, n), items)
    assert fed[0].tolist() == [105, 106, 0]  # this rank's 2 items, padded to the largest shard
    with pytest.raises(ValueError, match="holds 3 of 10 items, its shard has 2"):
        d.gather_shards(items[:3], n)


def _gloo_rank(rank, world, init, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    d = Dist(rank=rank, world=world)
    r = d.shard_range(5)
    x = torch.arange(5.0)[r.start : r.stop] * 10
    res = {
        "gather": d.gather_shards(x, 5).tolist(),
        "floats": d.sum_floats([rank + 0.5]),
        "tensor": d.sum_tensor_(torch.tensor([rank, 1])).tolist(),
    }
    Path(out, f"{rank}.json").write_text(json.dumps(res))
    dist.destroy_process_group()


def test_collectives_on_a_real_gloo_group(tmp_path):
    ctx = mp.get_context("spawn")
    init = f"file://{tmp_path / 'store'}"
    procs = [ctx.Process(target=_gloo_rank, args=(r, 2, init, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    for r in range(2):
        res = json.loads((tmp_path / f"{r}.json").read_text())
        assert res == {"gather": [0.0, 10.0, 20.0, 30.0, 40.0], "floats": [2.0], "tensor": [1, 2]}


# --- the local executor's GPUs ---------------------------------------------------------------------------------------


def test_workers_get_their_gpus_round_robin():
    gpus = [str(i) for i in range(4)]
    assert [worker_gpus(i, gpus, 1) for i in range(6)] == ["0", "1", "2", "3", "0", "1"]  # 5 and 6 share
    assert [worker_gpus(i, gpus, 2) for i in range(3)] == ["0,1", "2,3", "0,1"]
    assert [worker_gpus(i, ["a", "b", "c"], 2) for i in range(3)] == ["a,b", "c,a", "b,c"]
    assert worker_gpus(0, gpus, 0) == ""  # --gpus-per-run 0: hidden
    assert worker_gpus(3, [], 1) is None  # no GPU: the environment is left alone


def test_visible_gpus_keep_an_inherited_selection(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5d1a, 6")
    assert visible_gpus() == ["GPU-5d1a", "6"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert visible_gpus() == []


def test_local_executor_checks_gpus_per_run():
    with pytest.raises(ConfigError, match="whole number"):
        LocalExecutor(gpus_per_run=0.5, devices=["0", "1"])
    with pytest.raises(ConfigError, match="--gpus-per-run 3 but only 2 GPU"):
        LocalExecutor(gpus_per_run=3, devices=["0", "1"])
    assert LocalExecutor(devices=["0"]).gpus_per_run == 1
    assert LocalExecutor(gpus_per_run=4, devices=[]).gpus_per_run == 4  # no GPU: nothing to check against


def test_spawned_workers_see_their_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "parent's")  # replaced in each worker, not inherited
    # A config that fails at once: the worker still records what it saw (in its status and bench.json).
    specs = [{"run_dir": str(tmp_path / f"run{i}"), "config": {"no_such_section": {}}} for i in range(2)]
    ex = LocalExecutor(jobs=2, threads=1, gpus_per_run=2, devices=["3", "5", "7"])
    with pytest.warns(UserWarning, match=r"2 runs at a time with 2 GPU\(s\) each on 3 GPU\(s\): up to 2 runs share"):
        statuses = {Path(s["run_dir"]).name: st for s, st in ex.map(specs)}
    want = {"run0": "3,5", "run1": "7,3"}
    assert {k: st["cuda_visible_devices"] for k, st in statuses.items()} == want
    assert all(st["state"] == "failed" for st in statuses.values())
    for name, gpus in want.items():
        assert json.loads((tmp_path / name / "bench.json").read_text())["cuda_visible_devices"] == gpus
        assert json.loads((tmp_path / name / "failed.json").read_text())["cuda_visible_devices"] == gpus
