"""The one training loop. Methods, objectives and the task plug in; the trainer reads only ``out["loss"]`` and logs
the rest. Batches are mappings the task prepares (augmentation, normalisation) and scores (its metrics).

A run directory (:class:`~vpeft.rundir.RunDir`) holds ``config.yaml`` (the resolved config), ``log.jsonl`` (one line
per epoch), ``state.pt`` (the resume state, rewritten atomically after every epoch, removed at the end),
``trainable.safetensors`` (only the trainable tensors of the selected epoch) and ``result.json``.
"""

from __future__ import annotations

import errno
import inspect
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from ..backbones import split_backbone_spec
from ..config import RunConfig, run_identity, spec_string
from ..data.loader import DeviceData, StreamedData, batch_len, batch_targets, fits_on_device, split_batch
from ..data.sources import augment_kind, data_class_names, describe_split, resolve_splits, streamed
from ..data.sources import load as load_data
from ..errors import ConfigError, DivergedError, RunDirError
from ..memory import SavedTensorProbe, memory_stats, param_counts
from ..registry import FAMILIES
from ..run import amp_context, build_model, evaluate_task, resolve_device
from ..rundir import SELECTION_FILE, STATE_FILE, RunDir  # noqa: F401 - SELECTION_FILE: its earlier home
from ..targets import check_target, evaluate_target, parse_targets
from ..tasks.base import Metric
from ..trainable import trainable_named_parameters
from ..version import __version__
from .checkpoint import load_trainable_state, trainable_state_dict
from .distributed import setup as setup_distributed
from .optim import build_optimizer, lr_at, param_groups, set_lr

log = logging.getLogger("vpeft")

BEST_TEST_WARNING = (
    "model selection 'best-test' picks the epoch with the best TEST accuracy (as the GIST, iDAT and GPS code does); "
    "the reported accuracy is optimistic and not comparable to 'last' or 'val'"
)


def _versions() -> dict:
    import platform

    import numpy
    import timm

    return {
        "vpeft": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def _git() -> dict:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return {"hash": None, "dirty": None}
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=5)
        return {"hash": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"hash": None, "dirty": None}


def _splits(cfg: RunConfig) -> tuple[str, Optional[str], str]:
    return resolve_splits(cfg.data, cfg.train.select)


def _diff_configs(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff_configs(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def _select(
    cfg: RunConfig,
    model,
    train_ds,
    out: Path,
    resume: bool,
    progress: bool,
    main: bool = True,
    train_split: Optional[str] = None,
    task=None,
) -> dict:
    """Run (or, when resuming, reload) the selector's pass and apply it; returns what to record in the result. The
    run's ``task`` prepares batches and gives the loss for a selector that asks for it (GPS ``loss=task``)."""
    selector, run_dir = cfg.selector, RunDir(out)
    # Both files, or the pass is redone (a kill between the two writes leaves only the first).
    saved = run_dir.read_selection() if resume else None
    if saved is not None:
        state, info = saved
    else:
        t0 = time.perf_counter()
        state = selector.prepare(
            model,
            train_ds,
            normalize=cfg.data.normalize,
            batch_size=cfg.train.batch_size,
            progress=progress,
            source=(cfg.data, train_split),
            # a selector written before the task argument (a plug-in) is called as it was
            **({"task": task} if "task" in inspect.signature(selector.prepare).parameters else {}),
        )
        info = {
            "seconds": time.perf_counter() - t0,
            "selected": selector.count(state),
            "images": len(train_ds),
            **selector.record(),
        }
        if main:
            run_dir.save_selection(state, info)
    selector.apply(model, state)
    return info


def _check_finite(loss_sum: float, epoch: int, step: int) -> None:
    if not math.isfinite(loss_sum):
        raise DivergedError(f"loss is {loss_sum} by epoch {epoch + 1}, step {step + 1}: lower the lr")


def train(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch_end: Optional[Callable[[int, dict], None]] = None,
) -> dict:
    """Train ``cfg`` into ``out_dir`` and return the result record (also written to ``result.json``).

    Args:
        cfg: The run config.
        out_dir: Run directory; created if needed.
        resume: Continue from ``state.pt`` (a finished run returns its result).
        overwrite: Replace an existing run directory's contents.
        progress: Show tqdm progress bars.
        on_epoch_end: Called as ``on_epoch_end(epoch, log_entry)`` after each epoch's state is saved.
    """
    ddp = setup_distributed(cfg.train.device)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        with ExitStack() as held:
            return _train(cfg, Path(out_dir), resume, overwrite, progress and ddp.main, on_epoch_end, ddp, held)
    except OSError as e:
        if e.errno in _WRITE_ERRORS:  # a read-only or full disk: one line; the atomic writes left every file whole
            where = e.filename or out_dir
            raise RunDirError(
                f"cannot write {where}: {e.strerror}. Files already in {out_dir} are whole; "
                "free space or fix permissions, then rerun with --resume"
            ) from None
        raise
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        ddp.close()


#: What a write to a read-only, full or over-quota disk raises.
_WRITE_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def _hold(run_dir: RunDir, held: ExitStack) -> None:
    """Hold the run folder's lock until the run ends; a folder this run created and left empty goes with it."""
    if not run_dir.path.exists():
        held.callback(lambda: run_dir.path.is_dir() and not any(run_dir.path.iterdir()) and run_dir.path.rmdir())
    lock = held.enter_context(run_dir.lock())
    if lock.stale:
        log.warning(
            "%s was left locked by a run that was killed (pid %s); taking it over",
            run_dir.path,
            lock.stale.get("pid", "?"),
        )


def weights_source(bc) -> str:
    """Where a run's backbone weights come from: ``checkpoint``, ``hub``, ``shipped`` (a vpeft backbone's own file)
    or ``random`` (frozen random weights: rarely what anyone wants)."""
    if bc.checkpoint:
        return "checkpoint"
    if bc.pretrained:
        return "hub"
    family, name, _ = split_backbone_spec(bc.spec)
    return "shipped" if FAMILIES.get(family)().weights(name) is not None else "random"


def random_backbone_warning(spec: str) -> str:
    return (
        f"backbone {spec!r} has random weights (no checkpoint, not pretrained, none shipped): the frozen trunk "
        "is random, so the results say little about the method; pass --checkpoint FILE or --pretrained"
    )


class PeakMemory:
    """The CUDA caching allocator's peak allocated and reserved bytes on one device, since the last ``reset``; a
    no-op (an empty record) off CUDA."""

    def __init__(self, device: torch.device):
        self.device, self.on = device, device.type == "cuda"

    def reset(self) -> None:
        if self.on:
            torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> dict:
        if not self.on:
            return {}
        return {
            "cuda_peak_allocated": torch.cuda.max_memory_allocated(self.device),
            "cuda_peak_reserved": torch.cuda.max_memory_reserved(self.device),
        }


def _device_record(device: torch.device) -> dict:
    """What the run trained on: type, index and name (the GPU's product name on CUDA)."""
    import os

    rec = {"type": device.type}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        rec.update(index=index, name=torch.cuda.get_device_name(index), visible=os.environ.get("CUDA_VISIBLE_DEVICES"))
    return rec


def _train(
    cfg: RunConfig, out: Path, resume: bool, overwrite: bool, progress: bool, on_epoch_end, ddp, held: ExitStack
) -> dict:
    # Bars only on a terminal; elsewhere (a log file, --no-progress) one line per epoch instead.
    lines = not (progress and sys.stderr.isatty())
    progress = progress and not lines
    tc, dc = cfg.train, cfg.data
    if dc.root is None:
        raise ConfigError("no data given: set data.root (--data TASK_DIR)")
    resolved = cfg.to_dict()
    resolved["data"]["root"] = str(Path(dc.root).resolve())
    if cfg.backbone.checkpoint:
        resolved["backbone"]["checkpoint"] = str(Path(cfg.backbone.checkpoint).resolve())

    # 1. Everything that can fail on bad input fails here, before the run directory is touched.
    train_split, val_split, test_split = _splits(cfg)
    all_splits = [s for s in (train_split, val_split, test_split) if s]
    task_cfg = cfg.task
    task_cfg.check_data(dc)
    num_classes = task_cfg.num_outputs(dc, all_splits)  # the head's size: classes, or the task's fixed outputs
    task_name = Path(dc.root).resolve().name  # `--data .` names the folder, not ""
    targets = parse_targets(dc.extra_tests)
    if targets and task_cfg.labels != "int":
        kind = "real-valued targets" if task_cfg.labels == "float" else f"{task_cfg.labels} labels"
        raise ConfigError(f"data.extra_tests scores class accuracy; task {task_cfg.name!r} has {kind}")
    for target in targets:  # a missing folder or list, or a label the run has no class for, fails now
        check_target(dc, target, num_classes)
    run_dir = RunDir(out)
    if ddp.main:  # one writer per run folder: a second training into it fails at once, naming this one
        _hold(run_dir, held)
    identity = run_identity(resolved)
    done = run_dir.check_start(resume, overwrite, lambda saved: _diff_configs(run_identity(saved), identity))
    if done is not None:
        log.info("run %s already finished", out)
        return done
    # Under torchrun every process has checked the directory before rank 0 writes into it; the debris of writes a
    # kill interrupted (".config.yaml.x1y2z3") goes.
    ddp.barrier()
    if ddp.main:
        run_dir.clear_debris()
    class_names = data_class_names(dc, num_classes) if task_cfg.needs_class_names else None
    model, objective = build_model(cfg, num_classes, class_names=class_names)
    weights = weights_source(cfg.backbone)
    if weights == "random" and ddp.main:
        warnings.warn(random_backbone_warning(cfg.backbone.spec), stacklevel=3)
    text = task_cfg.inputs == "text"  # token ids, tokenised by the backbone when loaded
    size = (0, 0) if text else (dc.img_size, dc.img_size) if dc.img_size else model.input_size
    augment = augment_kind(dc)
    labels = task_cfg.labels
    tok = {"tokenizer": task_cfg.text_encoder(model, dc)} if text else {}
    train_ds = load_data(dc, train_split, size, num_classes, training=True, labels=labels, **tok)
    val_ds = load_data(dc, val_split, size, num_classes, training=False, labels=labels, **tok) if val_split else None
    # A test split too large to hold decoded (ImageNet val) is read a chunk of data.eval_memory_mb at a time.
    test_stream = streamed(dc, test_split, size, num_classes, labels)
    test_ds = None
    if test_stream is None:
        test_ds = load_data(dc, test_split, size, num_classes, training=False, labels=labels, **tok)
    skipped = {
        s: len(d.skipped or [])
        for s, d in ((train_split, train_ds), (val_split, val_ds), (test_split, test_ds))
        if d is not None
    }

    if ddp.main:
        run_dir.prepare(overwrite=overwrite and not resume)

    device = resolve_device(tc.device)
    if ddp.enabled and device.type == "cuda":
        device = torch.device("cuda", ddp.local_rank)
    model.to(device), objective.to(device)
    use_amp = tc.amp != "none" and device.type == "cuda"
    if tc.amp != "none" and not use_amp:
        warnings.warn(f"train.amp={tc.amp!r} is ignored on {device.type}; training in fp32")
    amp = tc.amp if use_amp else "none"
    amp_dtype = torch.float16 if tc.amp == "fp16" else torch.bfloat16
    cuda = device.type == "cuda"
    tf32 = bool(cuda and tc.tf32 and not use_amp)
    if cuda:  # process-wide switches: set for this run, restored by train() after it
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    task = task_cfg.build(dc.normalize, augment, size)
    task.configure_training(dc, tc, num_classes, cfg.objective)  # timm's randaug, erasing, mixup: when asked for
    # Decoded splits that fit live on the device; the rest stream from pinned host memory.
    choice = tc.data_on_device
    resident = choice == "yes" or (choice == "auto" and fits_on_device([train_ds, val_ds, test_ds], device))
    train_data = DeviceData(train_ds, device, resident)
    val_data = DeviceData(val_ds, device, resident) if val_ds is not None else None
    test_data = DeviceData(test_ds, device, resident) if test_stream is None else StreamedData(test_stream, device)
    selection_info, peak = None, PeakMemory(device)
    if cfg.selector is not None:
        peak.reset()
        selection_info = _select(cfg, model, train_data, out, resume, progress, ddp.main, train_split, task)
        selection_info.update({f"selection_{k}": v for k, v in peak.read().items()})
    # The training peak is this run's own: reset after the selection pass (which has its own figure) and never
    # carried over from an earlier run of the same process (a sweep's long-lived worker).
    peak.reset()
    scaler = torch.amp.GradScaler("cuda") if use_amp and tc.amp == "fp16" else None
    if tc.select == "best-test":
        warnings.warn(BEST_TEST_WARNING)

    named = trainable_named_parameters(model, objective)
    nothing = cfg.method.trains_nothing  # zero-shot: no epoch, the model is evaluated as built
    epochs = 0 if nothing else tc.epochs
    if not named and not nothing:
        raise ConfigError(f"method {spec_string(cfg.method)!r} leaves nothing to train")
    if named and nothing:
        raise ConfigError(
            f"method {spec_string(cfg.method)!r} trains nothing, but objective {spec_string(cfg.objective)!r} "
            "adds trainable tensors: use the ce objective"
        )
    if ddp.main:  # written once the run can start, so a bad selector or method leaves no config behind
        run_dir.write_config(resolved)
    trainable = [p for _, p in named]
    ddp.broadcast_(trainable)
    no_decay = set(getattr(model.model, "no_weight_decay", lambda: set())())
    optimizer = build_optimizer(param_groups(named, tc, no_decay), tc) if named else None

    steps_per_epoch = train_data.num_batches(tc.batch_size, tc.drop_last)
    if steps_per_epoch == 0:
        raise ConfigError(
            f"train.drop_last with batch_size {tc.batch_size} leaves no batch of the {len(train_data)} training images"
        )
    unit = steps_per_epoch if tc.sched_unit == "step" else 1
    eval_bs = tc.eval_batch_size or (max(tc.batch_size, 256) if cuda else tc.batch_size)
    shard = (ddp.rank, ddp.world)

    def evaluate_split(data) -> Metric:
        metric = evaluate_task(model, objective, data, task, eval_bs, device, amp, shard=shard)
        metric.sync(ddp)  # each process evaluated its share of every batch
        return metric

    # 2. Resume state.
    start_epoch, history, best, memory, train_seconds = 0, [], None, None, 0.0
    state = run_dir.read_state() if resume else None
    if state is not None:
        load_trainable_state(model, objective, state["trainable"], source=str(run_dir / STATE_FILE))
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and cuda:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        if state.get("scaler") and scaler:
            scaler.load_state_dict(state["scaler"])
        start_epoch, history, best = state["epoch"], state["log"], state["best"]
        if best is not None and "acc" in best:  # written before tasks: the selection split's accuracy
            best = {
                "score": best["acc"],
                "metrics": {"accuracy": best["acc"]},
                "epoch": best["epoch"],
                "trainable": best["trainable"],
            }
        memory, train_seconds = state["memory"], state["train_seconds"]
        log.info("resuming %s at epoch %d", out, start_epoch + 1)
    elif resume:
        log.debug("nothing to resume in %s: starting", out)

    micro = max(1, tc.batch_size // tc.grad_accum // ddp.world)
    primary, selection_keys = task_cfg.primary_metric, (task_cfg.log_key("val"), task_cfg.log_key("test"))
    # Progress and divergence are read from the device every this many steps (and at the end of each epoch), so
    # the host never waits for the GPU inside an epoch otherwise.
    sync_every = max(1, tc.log_every)
    saved_at, last_save_cost, since_save = start_epoch, 0.0, 0.0
    epochs_bar = tqdm(
        range(start_epoch, epochs),
        desc="epochs",
        disable=not progress or nothing,
        initial=start_epoch,
        total=epochs,
        leave=False,
    )
    for epoch in epochs_bar:
        t0 = time.perf_counter()
        model.train(), objective.train()
        if tc.sched_unit == "epoch":
            set_lr(optimizer, lr_at(epoch, tc))
        gen = torch.Generator().manual_seed(tc.seed * 1_000_003 + epoch)
        # Augmentation draws its parameters from its own generator, seeded per epoch (and per process under
        # torchrun, which augments only its share), so a resumed run augments as the uninterrupted one.
        aug_gen = torch.Generator().manual_seed((tc.seed * 1_000_003 + epoch) * 8 + 1 + ddp.rank)
        sums: dict[str, torch.Tensor] = {}
        train_metric = task.metric()
        seen = 0
        order = torch.randperm(len(train_data), generator=gen)
        bar = tqdm(
            train_data.mappings(tc.batch_size, order, shard=shard, drop_last=tc.drop_last),
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{tc.epochs}",
            disable=not progress,
            leave=False,
        )
        for step, (batch, n) in enumerate(bar):
            # n is the global batch: under torchrun each process holds its share and scales its loss by it
            if tc.sched_unit == "step":
                set_lr(optimizer, lr_at(epoch * unit + step, tc, unit))
            batch = task.prepare(batch, train=True, generator=aug_gen)
            for micro_batch in split_batch(batch, micro):
                count = batch_len(micro_batch)
                if not count:  # under torchrun, a last batch smaller than the world leaves some shares empty
                    continue
                probe = SavedTensorProbe(model, objective) if memory is None else nullcontext()
                with probe, amp_context(device, amp), task.model_context(micro_batch):
                    # soft targets where the task mixes or smooths labels; the metric counts the hard labels
                    result = objective(model, micro_batch["image"], batch_targets(micro_batch))
                loss = result["loss"] * (count / n)
                (scaler.scale(loss) if scaler else loss).backward()
                for k, v in result.items():
                    if k != "logits":
                        part = v.detach().double() * count
                        sums[k] = sums[k] + part if k in sums else part
                train_metric.update(result["logits"], micro_batch)
                if memory is None:  # autocast's low-precision weight copies apart: they do not grow with the batch
                    memory = {
                        "saved_bytes": probe.activation_bytes,
                        "micro_batch": count,
                        "weight_copy_bytes": probe.weight_copy_bytes if use_amp else None,
                    }
            ddp.sum_grads_(trainable)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if "param_bytes" not in memory:
                memory.update(
                    memory_stats(
                        model, objective, optimizer, memory.pop("saved_bytes"), memory.pop("weight_copy_bytes")
                    )
                )
            optimizer.zero_grad(set_to_none=True)
            seen += batch_len(batch)
            if (step + 1) % sync_every == 0 and "loss" in sums:
                loss_now = float(sums["loss"])
                _check_finite(loss_now, epoch, step)
                bar.set_postfix(loss=f"{loss_now / max(seen, 1):.4f}")
        sums = {k: float(v) for k, v in sums.items()}  # the epoch's one read of the device (and the metric's)
        train_metric.sync(ddp)
        _check_finite(sums.get("loss", 0.0), epoch, steps_per_epoch - 1)
        if ddp.enabled:  # the epoch's statistics over every process's share
            keys = sorted(sums)
            totals = ddp.sum_floats([sums[k] for k in keys] + [seen])
            sums, seen = dict(zip(keys, totals[:-1])), int(totals[-1])
        entry = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        entry.update({k: v / seen for k, v in sums.items()})
        entry[task_cfg.log_key("train")] = train_metric.compute()[primary]
        train_seconds += time.perf_counter() - t0
        # Model selection bookkeeping on the task's primary metric, every eval_every epochs and at the last.
        if tc.select in ("val", "best-test") and ((epoch + 1) % tc.eval_every == 0 or epoch + 1 == tc.epochs):
            data, split = (val_data, "val") if tc.select == "val" else (test_data, "test")
            metrics = evaluate_split(data).compute()
            entry[task_cfg.log_key(split)] = metrics[primary]
            if task_cfg.better(metrics[primary], best["score"] if best else None):
                best = {
                    "score": metrics[primary],
                    "metrics": metrics,
                    "epoch": epoch + 1,
                    "trainable": trainable_state_dict(model, objective),
                }
        entry["seconds"] = time.perf_counter() - t0
        history.append(entry)
        shown = {k: f"{entry[k]:{'.1f' if primary == 'accuracy' else '.4f'}}" for k in selection_keys if k in entry}
        epochs_bar.set_postfix(loss=f"{entry['loss']:.4f}", **shown)
        if lines and ddp.main:  # no bar to update: one line per epoch (a log file gets no carriage returns)
            print(
                f"epoch {epoch + 1}/{tc.epochs}: loss {entry['loss']:.4f}"
                + "".join(f", {k} {v}" for k, v in shown.items())
                + f" ({entry['seconds']:.1f} s)",
                flush=True,
            )
        since_save += entry["seconds"]
        # The resume state is written every save_every epochs; with 0 (auto), whenever the epochs since the last
        # write took at least as long as that write did (full fine-tuning of a large model writes ~1 GB).
        due = (epoch + 1 - saved_at) >= tc.save_every if tc.save_every else since_save >= last_save_cost
        if due and epoch + 1 < tc.epochs:
            t_save = time.perf_counter()
            state = {
                "epoch": epoch + 1,
                "trainable": trainable_state_dict(model, objective),
                "optimizer": optimizer.state_dict(),
                "rng": torch.get_rng_state(),
                # On CUDA, dropout / drop-path draw from the device's generator, and fp16 keeps a loss scale: both
                # are part of what makes a resumed run the uninterrupted one.
                "cuda_rng": torch.cuda.get_rng_state(device) if cuda else None,
                "scaler": scaler.state_dict() if scaler else None,
                "log": history,
                "best": best,
                "memory": memory,
                "train_seconds": train_seconds,
            }
            if ddp.main:
                run_dir.save_state(state)
            del state
            saved_at, since_save, last_save_cost = epoch + 1, 0.0, time.perf_counter() - t_save
        if ddp.main:
            run_dir.write_log(history)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, entry)
    train_peak = peak.read()  # training (and the selection-split evaluations within it), before the final test

    # 3. Select, test, write.
    selected_epoch = epochs
    if memory is None:  # nothing trained (zeroshot): no training step to measure
        memory = {"micro_batch": 0, "train_memory_bytes": None, "saved_activation_bytes": None}
    if tc.select in ("val", "best-test") and best is not None:
        load_trainable_state(model, objective, best["trainable"], source="best epoch")
        selected_epoch = best["epoch"]
    t0 = time.perf_counter()
    test_metric = evaluate_split(test_data)
    test_metrics = test_metric.compute()
    tests = {
        t.name: evaluate_target(model, objective, task, dc, t, size, num_classes, eval_bs, device, amp)
        for t in (targets if ddp.main else [])
    }
    eval_seconds = time.perf_counter() - t0
    val_metrics = best["metrics"] if tc.select == "val" and best else None
    # Only the kept model's tensors (GIST's token lives in it); an objective's own extras (iDAT's teacher) go to
    # files of their own.
    if ddp.main:
        run_dir.save_trainable(model, metadata={"method": spec_string(cfg.method)})
        objective.save_extra(out)
    counts = param_counts(model)
    result = {
        **task.result_keys(test_metric, val_metrics),  # classify: test_acc, test_correct, test_total, val_acc
        "metrics": test_metrics,
        **({"val_metrics": val_metrics} if tc.select == "val" else {}),
        "primary_metric": primary,
        "higher_is_better": task_cfg.higher_is_better,
        "selected_epoch": selected_epoch,
        "backbone": cfg.backbone.spec,
        "method": spec_string(cfg.method),
        "objective": spec_string(cfg.objective),
        "task": task_name,
        task_cfg.head_key: num_classes,
        # The folder layout numbers classes by their folder names: kept so evaluation on other data can check them;
        # other layouts' names come from a classes.txt where there is one (for vpeft predict).
        "class_names": data_class_names(dc, num_classes) if task_cfg.labels != "float" else None,
        "seed": tc.seed,
        "trainable_params": counts["trainable"],
        "trainable_params_no_head": counts["trainable_no_head"],
        "total_params": counts["total"],
        "memory": {
            **{k: v for k, v in memory.items() if k != "micro_batch"},
            "batch_size": memory["micro_batch"],
            "dtype": str(amp_dtype if use_amp else torch.float32).replace("torch.", ""),
            "device": device.type,
            **train_peak,
        },
        "device": _device_record(device),
        "tf32": tf32,
        "data_on_device": train_data.resident,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "protocol": {
            "select": tc.select,
            "train_split": train_split,
            "val_split": val_split,
            "test_split": test_split,
            "format": dc.format,
            "split": describe_split(dc),
            "augment": augment,
            "resize": "direct bicubic, no crop"
            if augment == "none"
            else f"bicubic to size/{0.875}, random-resized crop for training, centre crop for testing",
            "img_size": list(size),
            "normalize": dc.normalize,
            "head_init": cfg.backbone.head_init,
            "epochs": epochs,
            "batch_size": tc.batch_size,
            "drop_last": tc.drop_last,
            "eval_every": tc.eval_every,
            "save_every": tc.save_every or "auto",
            "optimizer": tc.optimizer,
            "lr": tc.lr,
            "weight_decay": tc.weight_decay,
            "schedule": f"{tc.schedule}, warmup "
            + (f"{tc.warmup_steps} steps" if tc.warmup_steps else f"{tc.warmup_epochs} epochs")
            + f", stepped per {tc.sched_unit}",
        },
        "skipped_lines": skipped if test_stream is None else {**skipped, test_split: test_stream.bad_lines},
        "definitions": objective.definitions(cfg.task) if hasattr(objective, "definitions") else [],
        "warnings": ([BEST_TEST_WARNING] if tc.select == "best-test" else [])
        + ([random_backbone_warning(cfg.backbone.spec)] if weights == "random" else []),
        "backbone_weights": weights,
        "versions": _versions(),
        "git": _git(),
    }
    if selection_info is not None:
        result["selection"] = selection_info
    result.update(objective.extra_result(history))
    if tests:
        result["tests"] = tests
    if test_stream is not None:  # read a chunk at a time (data.eval_memory_mb), never held decoded whole
        result["test_streamed"] = {"images": len(test_stream), "chunk_images": test_stream.chunk}
    if ddp.enabled:
        result["distributed"] = {
            "world_size": ddp.world,
            "backend": torch.distributed.get_backend(),
            "batch_per_process": tc.batch_size // ddp.world,
        }
    if ddp.main:
        run_dir.write_result(result)
        run_dir.drop_state()
    return result
