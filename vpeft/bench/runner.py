"""Run a sweep: expand an experiment, skip what is finished, run the rest with an executor, record failures.

Each run lives in ``OUT/runs/<task>__<label>__s<seed>__<hash>/``: the trainer's run directory plus ``bench.json``
(what the sweep asked for), ``run.log`` (the run's own log) and, when it failed, ``failed.json`` (error and traceback).
A run with ``result.json`` is finished and never redone; a killed run continues from its ``state.pt``; a failed run is
left alone unless ``retry_failed``.

The local executor gives each worker its own GPUs (:func:`worker_gpus`): round robin over the visible GPUs,
``gpus_per_run`` each, set as ``CUDA_VISIBLE_DEVICES`` in the worker before anything touches CUDA. ``bench.json`` and
each run's status record the ``CUDA_VISIBLE_DEVICES`` the run saw (``None``: unset, every GPU of the machine).
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import socket
import time
import traceback
import warnings
from collections.abc import Iterable, Iterator
from multiprocessing.connection import wait
from pathlib import Path
from typing import Optional

import torch
import yaml

from ..config import RunConfig
from ..engine.checkpoint import atomic_write_json, atomic_write_text
from ..engine.trainer import train
from ..errors import ConfigError

# BENCH_FILE and FAILED_FILE lived here: importable from here still.
from ..lock import FolderLock
from ..run import build_model
from ..rundir import BENCH_FILE, FAILED_FILE, RUN_LOG, RunDir  # noqa: F401
from .experiment import Experiment, RunSpec, describe, expand

log = logging.getLogger("vpeft.bench")


def run_state(run_dir: str | Path) -> str:
    """A sweep's view of a run folder: ``done``, ``failed``, ``partial`` (a resume state to continue from) or
    ``pending`` (to run from the start)."""
    d = RunDir(run_dir)
    state = d.state
    if state in ("done", "failed"):
        return state
    return "partial" if d.resumable else "pending"


def _record_failure(run_dir: Path, error: str, tb: str = "", **where) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {"state": "failed", "error": error, "traceback": tb, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **where}
    RunDir(run_dir).write_failure(info)
    return info


def run_one(spec: dict, threads: Optional[int] = None) -> dict:
    """Train one run of a sweep in this process; never raises for a failing run (the failure is recorded)."""
    import torch

    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    folder = RunDir(run_dir)
    folder.clear_failure()
    where = {"host": socket.gethostname(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    folder.write_bench({**{k: v for k, v in spec.items() if k != "config"}, **where})
    if threads:
        torch.set_num_threads(threads)
    handler = logging.FileHandler(run_dir / RUN_LOG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    t0 = time.perf_counter()
    try:
        cfg = RunConfig.from_dict(spec["config"])
        result = train(cfg, run_dir, resume=True, progress=False)
        # The task's primary metric on the test split: accuracy (test_acc) for classify, dice for segment, ...
        metric = result.get("primary_metric") or "accuracy"
        value = result["test_acc"] if metric == "accuracy" else (result.get("metrics") or {}).get(metric)
        log.info("finished: test %s %s", metric, "-" if value is None else f"{value:.4f}")
        status = {"state": "done", "metric": metric, "value": value, "seconds": time.perf_counter() - t0, **where}
        if "test_acc" in result:
            status["test_acc"] = result["test_acc"]
        return status
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - a failing run must not stop the sweep
        tb = traceback.format_exc()
        log.error("run failed: %s", tb)
        return _record_failure(run_dir, f"{type(e).__name__}: {e}", tb, **where)
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
        if torch.cuda.is_initialized():  # a long-lived worker: the next run's reserved memory starts from nothing
            import gc

            gc.collect()
            torch.cuda.empty_cache()


# --- local executor: long-lived worker processes, restarted when one dies --------------------------------------------


def visible_gpus() -> list[str]:
    """This machine's GPUs as ``CUDA_VISIBLE_DEVICES`` entries (indices, or the entries of an inherited
    ``CUDA_VISIBLE_DEVICES``, which may be UUIDs); empty without CUDA."""
    import torch

    n = torch.cuda.device_count()
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    if inherited is None:
        return [str(i) for i in range(n)]
    return [e.strip() for e in inherited.split(",") if e.strip()][:n]


def worker_gpus(worker: int, gpus: list[str], per_run: int) -> Optional[str]:
    """``CUDA_VISIBLE_DEVICES`` for local worker ``worker``: GPUs ``(worker * per_run + j) % len(gpus)`` for
    ``j < per_run``, so workers beyond ``len(gpus) // per_run`` share; ``""`` (no GPU) when ``per_run`` is 0;
    ``None`` (leave the environment alone) when there is no GPU."""
    if not gpus:
        return None
    return ",".join(gpus[(worker * per_run + j) % len(gpus)] for j in range(per_run))


def _worker(conn, threads: Optional[int], gpus: Optional[str] = None) -> None:
    if gpus is not None:  # first thing, before anything touches CUDA (importing torch does not)
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    os.environ.setdefault("OMP_NUM_THREADS", str(threads or 1))
    logging.getLogger().handlers.clear()
    warnings.simplefilter("default")
    while True:
        try:
            spec = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if spec is None:
            return
        try:
            conn.send(run_one(spec, threads))
        except KeyboardInterrupt:
            return


class LocalExecutor:
    """Runs in separate worker processes, ``jobs`` at a time. A worker that dies (crash, out of memory, killed)
    fails only its current run; a new worker takes its place (and its GPUs). ``fresh`` starts a new process for every
    run. Worker ``i`` sees only its ``gpus_per_run`` GPUs (:func:`worker_gpus`; default 1, 0 hides every GPU) of
    ``devices`` (default :func:`visible_gpus`); with more workers than GPUs allow, they share, with a warning."""

    name = "local"

    def __init__(
        self,
        jobs: int = 1,
        threads: Optional[int] = None,
        fresh: bool = False,
        gpus_per_run: Optional[float] = None,
        devices: Optional[list[str]] = None,
    ):
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.jobs, self.threads, self.fresh = jobs, threads, fresh
        self.devices = visible_gpus() if devices is None else list(devices)
        k = 1 if gpus_per_run is None else gpus_per_run
        if k != int(k) or k < 0:
            raise ConfigError(
                f"--gpus-per-run {gpus_per_run}: the local executor takes a whole number of GPUs per run"
                " (fractions are for --executor ray)"
            )
        if self.devices and k > len(self.devices):
            raise ConfigError(f"--gpus-per-run {int(k)} but only {len(self.devices)} GPU(s) are visible")
        self.gpus_per_run = int(k)

    def _start(self, ctx, slot: int):
        parent, child = ctx.Pipe()
        gpus = worker_gpus(slot, self.devices, self.gpus_per_run)
        proc = ctx.Process(target=_worker, args=(child, self.threads, gpus), daemon=True)
        proc.start()
        child.close()
        return {"proc": proc, "conn": parent, "spec": None, "slot": slot, "gpus": gpus}

    def map(self, specs: Iterable[dict]) -> Iterator[tuple[dict, dict]]:
        ctx = mp.get_context("spawn")
        queue = list(specs)
        n, k, g = min(self.jobs, len(queue)), self.gpus_per_run, len(self.devices)
        if g and n * k > g:
            warnings.warn(
                f"{n} runs at a time with {k} GPU(s) each on {g} GPU(s): up to {-(-n * k // g)} runs share "
                "a GPU (their memory and time add up); lower --jobs or --gpus-per-run to avoid it"
            )
        workers = [self._start(ctx, i) for i in range(n)]
        try:
            while True:
                for w in workers:
                    if w["spec"] is None and queue:
                        w["spec"] = queue.pop(0)
                        w["conn"].send(w["spec"])
                busy = [w for w in workers if w["spec"] is not None]
                if not busy:
                    break
                ready = wait([w["conn"] for w in busy] + [w["proc"].sentinel for w in busy])
                for w in busy:
                    if w["conn"] in ready:
                        try:
                            status = w["conn"].recv()
                        except EOFError:  # the process died mid-run
                            status = None
                    elif w["proc"].sentinel in ready:
                        status = None
                    else:
                        continue
                    spec, w["spec"] = w["spec"], None
                    died = status is None
                    if died:
                        w["proc"].join(5)
                        status = _record_failure(
                            Path(spec["run_dir"]),
                            f"worker process died (exit code {w['proc'].exitcode})",
                            cuda_visible_devices=w["gpus"]
                            if w["gpus"] is not None
                            else os.environ.get("CUDA_VISIBLE_DEVICES"),
                        )
                    if died or self.fresh:
                        self._stop(w)
                        workers.remove(w)
                        if queue:
                            workers.append(self._start(ctx, w["slot"]))
                    yield spec, status
        finally:
            for w in workers:
                self._stop(w)

    @staticmethod
    def _stop(w) -> None:
        try:
            if w["proc"].is_alive():
                w["conn"].send(None)
                w["proc"].join(2)
        except (BrokenPipeError, OSError):
            pass
        if w["proc"].is_alive():
            w["proc"].terminate()
            w["proc"].join(2)


# --- Ray executor -----------------------------------------------------------------------------------------------------


def _ray_run(spec: dict, threads: Optional[int]) -> dict:
    return run_one(spec, threads)


class RayExecutor:
    """The same runs as Ray tasks on a local Ray instance (started and stopped here) or on a running cluster
    (``address``, e.g. ``ray://head:10001`` or ``auto``). Each run asks for ``threads`` CPUs and ``gpus`` GPUs; the
    run directories must be on storage every node sees."""

    name = "ray"

    def __init__(
        self, address: Optional[str] = None, threads: int = 1, gpus: float = 0, num_cpus: Optional[int] = None
    ):
        self.address, self.threads, self.gpus, self.num_cpus = address, threads, gpus, num_cpus

    def _check_resources(self, have: dict) -> None:
        """Each run asks for ``threads`` CPUs and ``gpus`` GPUs: a cluster with fewer would queue the runs forever."""
        for kind, need, option in (("GPU", self.gpus, "--gpus-per-run"), ("CPU", self.threads, "--threads")):
            if need and have.get(kind, 0) < need:
                where = f"the Ray cluster at {self.address}" if self.address else "this machine's Ray instance"
                raise ConfigError(
                    f"each run asks for {need:g} {kind}(s) ({option}) but {where} has "
                    f"{have.get(kind, 0):g}; no run could ever start"
                )

    def map(self, specs: Iterable[dict]) -> Iterator[tuple[dict, dict]]:
        try:
            import ray
        except ImportError:
            raise ConfigError("the Ray executor needs ray: pip install 'vpeft[ray]'") from None
        specs = list(specs)
        started = not ray.is_initialized()
        if started:
            kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if self.address:
                _check_reachable(self.address)
                try:
                    ray.init(address=self.address, **kw)
                except ConnectionError as e:
                    raise ConfigError(
                        f"no Ray cluster at --ray-address {self.address}: {e} Start one with "
                        "'ray start --head', or leave out --ray-address to run Ray on this machine"
                    ) from None
            else:
                # Ray starts workers at nice 15: beside any other busy process they then crawl (15x slower here).
                os.environ.setdefault("RAY_worker_niceness", "0")
                ray.init(num_cpus=self.num_cpus or os.cpu_count(), **kw)
        try:
            self._check_resources(ray.cluster_resources())
            task = ray.remote(num_cpus=self.threads, num_gpus=self.gpus, max_retries=0)(_ray_run)
            refs = {task.remote(s, self.threads): s for s in specs}
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    spec = refs.pop(ref)
                    try:
                        status = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - the task's worker died
                        status = _record_failure(Path(spec["run_dir"]), f"ray task failed: {type(e).__name__}: {e}")
                    yield spec, status
        finally:
            if started:
                ray.shutdown()


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail at once on a ``host:port`` (or ``ray://host:port``) that takes no connection: ``ray.init`` would retry it
    for minutes. ``auto`` and addresses without a port are left to Ray, which answers those at once."""
    hostport = address.removeprefix("ray://")
    host, colon, port = hostport.rpartition(":")
    if not colon or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(
            f"no Ray cluster at --ray-address {address}: {host}:{port} takes no connection ({e}). Start "
            "one with 'ray start --head', or leave out --ray-address to run Ray on this machine"
        ) from None


# --- the sweep --------------------------------------------------------------------------------------------------------


def plan(exp: Experiment, out: str | Path, write: bool = True) -> list[RunSpec]:
    """Expand and write the plan (``experiment.yaml``, ``runs.jsonl``) into ``out`` (``write=False``: expand only)."""
    out = Path(out)
    specs = expand(exp, out)
    if not write:
        return specs
    old = out / "runs.jsonl"
    if old.is_file():
        now = {s.run_dir for s in specs}
        dropped = [
            d
            for d in (json.loads(line)["run_dir"] for line in old.read_text().splitlines() if line.strip())
            if d not in now and run_state(d) == "done"
        ]
        if dropped:
            print(
                f"note: {len(dropped)} finished runs of this folder's previous plan are not in this one; they stay "
                "on disk, but reports of the folder now leave them out (rerun the previous experiment to bring them "
                "back)"
            )
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "name": exp.name,
        "suite": exp.suite,
        "source": exp.source,
        "about": describe(exp),
        "labels": [m["label"] for m in exp.methods],
        "tasks": list(dict.fromkeys(s.task for s in specs)),
        "seeds": exp.seeds,
        **({"list_seeds": exp.list_seeds} if exp.list_seeds else {}),
        "grid": exp.grid,
        "overrides": exp.overrides,
        "compare": [list(p) for p in exp.compare],
        "recipe": exp.recipe.get("_path") if exp.recipe else None,
    }
    atomic_write_text(out / "experiment.yaml", yaml.safe_dump(meta, sort_keys=False))
    atomic_write_text(out / "runs.jsonl", "".join(json.dumps(s.to_dict()) + "\n" for s in specs))
    return specs


def check_plan(specs: list[RunSpec]) -> None:
    """Build the model of every distinct run of the plan on the ``meta`` device (no weights, no data; seconds) and fail
    before any run starts when some cannot start: a method that does not apply to its backbone, an iDAT teacher
    that takes other images than the student, a checkpoint file that is not there. The error lists each failing
    method entry once, with one of its runs, so nothing is left to fail one run after another."""
    bad: dict[tuple[str, str], list[RunSpec]] = {}
    seen: dict[str, Optional[str]] = {}
    for spec in specs:
        cfg = json.loads(json.dumps(spec.config))
        cfg["train"]["seed"], cfg["data"]["root"] = 0, "."  # neither changes the model's structure
        key = json.dumps(cfg, sort_keys=True, default=str)
        if key not in seen:
            seen[key] = _structure_error(cfg)
        if seen[key]:
            bad.setdefault((spec.label, seen[key]), []).append(spec)
    if bad:
        lines = [
            f"  {label}: {err} (e.g. task {runs[0].task}, seed {runs[0].seed}; {len(runs)} run(s))"
            for (label, err), runs in bad.items()
        ]
        n = sum(len(r) for r in bad.values())
        raise ConfigError(f"{n} of the {len(specs)} planned runs cannot start; nothing was run:\n" + "\n".join(lines))


def _structure_error(cfg: dict) -> Optional[str]:
    """Why the run config ``cfg`` cannot build its model, or None. Checkpoint files are checked to exist, not read."""
    for section in ("backbone", "objective", "selector"):
        sec = cfg.get(section)
        for key, value in sec.items() if isinstance(sec, dict) else ():
            if key.endswith("checkpoint") and value:
                if not Path(value).is_file():
                    return f"{section}.{key}: file {value} does not exist"
                sec[key] = None
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = RunConfig.from_dict(cfg)
            n = run.task.outputs or 2  # the head size a task fixes (segment: one mask)
            build_model(run, n, class_names=[f"class {i}" for i in range(n)] if run.task.needs_class_names else None)
    except (ConfigError, ValueError) as e:  # what a bad config raises (CheckpointError is a ConfigError)
        return str(e).splitlines()[0]
    except Exception:  # noqa: BLE001 - anything else is no verdict on the config: the run itself will tell
        return None
    return None


def run_sweep(
    exp: Experiment,
    out: str | Path,
    executor,
    *,
    retry_failed: bool = False,
    progress: bool = True,
    dry_run: bool = False,
) -> dict:
    """Run every unfinished run of ``exp`` into ``out``; returns counts and the failures. The folder is locked for the
    sweep's life (:mod:`vpeft.lock`): a second sweep into it fails at once, naming the first."""
    with FolderLock(out, "sweep folder") as lock:
        if lock.stale:
            print(
                f"note: {out} was left locked by a sweep that was killed (pid {lock.stale.get('pid', '?')}); "
                "taking it over"
            )
        return _run_sweep(exp, out, executor, retry_failed=retry_failed, progress=progress, dry_run=dry_run)


def _run_sweep(
    exp: Experiment, out: str | Path, executor, *, retry_failed: bool, progress: bool, dry_run: bool
) -> dict:
    from tqdm import tqdm

    # A dry run writes the plan into a new folder (to read it) but never replaces one (reports follow the plan).
    specs = plan(exp, out, write=not (dry_run and (Path(out) / "runs.jsonl").is_file()))
    states = {s.run_id: run_state(s.run_dir) for s in specs}
    todo = [
        s
        for s in specs
        if states[s.run_id] in ("pending", "partial") or (retry_failed and states[s.run_id] == "failed")
    ]
    # Seed-major order: a sweep stopped early holds whole seeds of every method rather than all seeds of a few.
    todo.sort(key=lambda s: exp.seeds.index(s.seed) if s.seed in exp.seeds else 0)
    check_plan(todo)
    counts = {k: sum(v == k for v in states.values()) for k in ("done", "failed", "partial", "pending")}
    print(
        f"{describe(exp)}\n{len(specs)} runs: {counts['done']} finished, {counts['partial']} to resume, "
        f"{counts['pending']} new, {counts['failed']} failed"
        + ("" if retry_failed or not counts["failed"] else " (left; --retry-failed reruns them)")
        + f"; running {len(todo)} with the {executor.name} executor"
    )
    summary = {"total": len(specs), "ran": 0, "done": counts["done"], "failed": []}
    if dry_run or not todo:
        summary["failed"] = [_failure(s) for s in specs if states[s.run_id] == "failed"]
        return summary
    bar = tqdm(total=len(todo), desc="runs", disable=not progress, unit="run")
    failed_now = set()
    try:
        for spec, status in executor.map([s.to_dict() for s in todo]):
            summary["ran"] += 1
            name = Path(spec["run_dir"]).name
            if status["state"] == "done":
                summary["done"] += 1
                gpus = status.get("cuda_visible_devices")
                bar.write(
                    f"done    {name}: {_score(status)} ({status['seconds']:.0f} s" + (f", GPU {gpus})" if gpus else ")")
                )
            else:
                failed_now.add(spec["run_id"])
                bar.write(f"FAILED  {name}: {status['error'].splitlines()[0][:200]}")
            bar.update(1)
    except KeyboardInterrupt:
        bar.close()
        print("interrupted: rerun the same command to finish the missing runs (finished ones are kept)")
        raise
    bar.close()
    summary["failed"] = [_failure(s) for s in specs if run_state(s.run_dir) == "failed"]
    atomic_write_json(Path(out) / "sweep.json", summary)
    return summary


def _score(status: dict) -> str:
    """A finished run's test score for the progress line: ``84.50%`` (accuracy), ``dice 71.20`` (another metric)."""
    metric, value = status.get("metric", "accuracy"), status.get("value", status.get("test_acc"))
    if value is None:
        return f"{metric} -"
    return f"{value:.2f}%" if metric == "accuracy" else f"{metric} {value:.4g}"


def _failure(spec: RunSpec) -> dict:
    info = RunDir(spec.run_dir).read_failure()
    return {"run_dir": spec.run_dir, "task": spec.task, "label": spec.label, "seed": spec.seed, "error": info["error"]}
