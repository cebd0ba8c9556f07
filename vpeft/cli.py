"""The ``vpeft`` command line. ``vpeft COMMAND --help`` documents each command."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import re
import shlex
import sys
import warnings
from pathlib import Path

from .backbones import split_backbone_spec
from .bench import cli as bench_cli
from .catalog import FAMILIES, FORMATS, METHODS, OBJECTIVES, SELECTORS, TASKS
from .config import RunConfig, expand_backbone_spec
from .config_base import field_docs, load_yaml
from .data.check import check
from .data.entries import layout
from .data.sources import load, resolve_splits
from .data.synth import REGRESSION_TASKS, generate
from .data.synth import TASKS as SYNTH_TASKS
from .data.synth_coop import generate_coop
from .data.synth_dg import generate_dg
from .data.synth_seg import generate_seg
from .data.synth_text import generate_glue
from .demo import run_clip_demo, run_demo, run_dg_demo, run_seg_demo, run_text_demo
from .engine.trainer import train
from .errors import ConfigError, DataError, VpeftError
from .export import FORMATS as EXPORT_FORMATS
from .export import export
from .measure import AMP_KEYS, MEASURE_KEYS, measure
from .methods.merge import merged_format, save_merged
from .predict import (
    Predictor,
    image_files,
    predict_multitask,
    prompt_mask_files,
    read_texts,
    run_info,
    write_masks,
)
from .presets import PRESETS, get_preset
from .run import evaluate, evaluate_task, load_run, read_run_config
from .rundir import CONFIG_FILE, TRAINABLE_FILE, RunDir
from .spec import apply_overrides, format_spec, parse_spec
from .targets import Target, evaluate_target
from .version import __version__
from .zoo import FAMILY_ZOO, ZOO

EPILOG = """examples:
  vpeft demo
  vpeft data synth --out data/ --tasks shapes
  vpeft train --data data/shapes --backbone vit_tiny_patch16_224:img_size=32,patch_size=4 --method bitfit --out runs/a
  vpeft train --config run.yaml train.lr=0.01 method.name=full --out runs/b
  vpeft eval --run runs/a
  vpeft merge --run runs/a --out merged.safetensors
  vpeft predict --run runs/a --images photos/ --top-k 3 --output predictions.csv
  vpeft predict --run runs/rte --texts pairs.tsv        # a text run: one example per line, a pair tab-separated
  vpeft predict --merged merged.safetensors --images img.jpg
  vpeft predict --runs runs/dtl-cifar runs/dtl-dtd --images img.jpg   # DTL runs share the backbone trunk
  vpeft export --run runs/lora --format peft --out export/lora
  vpeft measure --backbone vit_base_patch16_224 --method linear --method bitfit --method full --batch-size 2
  vpeft list methods
  torchrun --nproc_per_node 2 -m vpeft train --data data/shapes --method lora --out runs/ddp   # data parallel
  vpeft bench run --suite synth --method linear --method lora --seeds 0 1 2 --out results/s --jobs 2
  vpeft report results/s --compare linear lora
"""


def _add_train(sub):
    p = sub.add_parser(
        "train",
        help="fine-tune a backbone with a method on a task folder",
        description="Train backbone x method x objective on a VTAB-1K-layout task folder. Options given on the "
        "command line override --config; dotted SECTION.KEY=VALUE overrides (e.g. train.lr=0.01 method.rank=4) "
        "come last.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", metavar="SECTION.KEY=VALUE", help="dotted config overrides")
    p.add_argument("--config", help="run config YAML (sections backbone, method, objective, data, train)")
    p.add_argument("--data", help="data folder: a task in any layout (vpeft list formats) or a folder of class folders")
    p.add_argument("--backbone", help="timm model name[:key=value,...]")
    p.add_argument("--checkpoint", help="backbone weights: .npz, .safetensors or .pth")
    p.add_argument("--pretrained", action="store_true", help="download timm hub weights (needs network)")
    p.add_argument("--pool", choices=["token", "avg"], help="classifier input (default: the model's)")
    p.add_argument("--preset", help="a named method + objective pair (see 'vpeft list presets'), e.g. idat-ps-kl")
    p.add_argument("--method", help="method spec, name[:key=value,...] (see 'vpeft list methods')")
    p.add_argument("--objective", help="objective spec (see 'vpeft list objectives')")
    p.add_argument("--selector", help="selector spec, e.g. gps:k=1 (see 'vpeft list selectors')")
    p.add_argument("--task", help="task spec: classify (default), regress, ... (see 'vpeft list tasks')")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--select", choices=["last", "val", "best-test"], help="model-selection rule (default last)")
    p.add_argument("--device", help="auto (default: a GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], help="mixed precision on CUDA (default none)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    p.add_argument("--skip-bad", action="store_true", help="leave out bad list lines (counted in result.json)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _train_config(args):
    data = load_yaml(args.config) if args.config else {}
    data = expand_backbone_spec({k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()})

    def sec(name: str) -> dict:
        if data.get(name) is None:  # absent, or `data:` with every key commented out
            data[name] = {}
        if not isinstance(data[name], dict):
            raise ConfigError(f"{args.config}: section {name!r} must be a mapping, got {data[name]!r}")
        return data[name]

    if args.preset:
        preset = get_preset(args.preset)
        data["method"], data["objective"] = preset["method"], dict(preset["objective"])
    if args.data:
        sec("data")["root"] = args.data
    if args.backbone:
        sec("backbone")["spec"] = args.backbone
    if args.checkpoint:
        sec("backbone")["checkpoint"] = args.checkpoint
    if args.pretrained:
        sec("backbone")["pretrained"] = True
    if args.pool:
        sec("backbone")["pool"] = args.pool
    if args.skip_bad:
        sec("data")["skip_bad"] = True
    for flag in ("method", "objective", "selector", "task"):
        value = getattr(args, flag)
        if value:
            name, kwargs = parse_spec(value)
            data[flag] = {"name": name, **kwargs}
    for flag, key in (
        ("epochs", "epochs"),
        ("batch_size", "batch_size"),
        ("lr", "lr"),
        ("seed", "seed"),
        ("select", "select"),
        ("device", "device"),
        ("amp", "amp"),
    ):
        value = getattr(args, flag)
        if value is not None:
            sec("train")[key] = value
    data = apply_overrides(data, args.overrides)
    return RunConfig.from_dict(data)


def cmd_train(args) -> int:
    cfg = _train_config(args)
    result = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        _print_result(result, args.out, cfg.selector)
    return 0


def _mib(n) -> str:
    return f"{n / 2**20:.1f} MiB"


def _print_result(result: dict, out, selector=None) -> None:
    m = result["memory"]
    print(f"run:        {out}")
    sel = f"  selector: {selector.describe()}" if selector is not None else ""
    head = f"{result['num_classes']} classes" if "num_classes" in result else f"{result['num_outputs']} output(s)"
    print(f"task:       {result['task']} ({head})  method: {result['method']}  objective: {result['objective']}{sel}")
    if "test_acc" in result:
        print(
            f"test acc:   {result['test_acc']:.2f}%  ({result['test_correct']}/{result['test_total']}, "
            f"select={result['protocol']['select']}, epoch {result['selected_epoch']})"
        )
    else:
        print(
            f"test:       {', '.join(f'{k} {v:.4f}' for k, v in result['metrics'].items())}  (primary "
            f"{result['primary_metric']}, select={result['protocol']['select']}, epoch {result['selected_epoch']})"
        )
    print(
        f"trainable:  {result['trainable_params']:,} ({result['trainable_params_no_head']:,} without the head) "
        f"of {result['total_params']:,}"
    )
    if m.get("train_memory_bytes") is None:
        print("train mem:  - (nothing trained)")
    else:
        print(
            f"train mem:  {_mib(m['train_memory_bytes'])} (activations {_mib(m['saved_activation_bytes'])}, "
            f"batch {m['batch_size']}, {m['dtype']}, {m['device']})"
        )
    print(f"time:       train {result['train_seconds']:.1f} s, eval {result['eval_seconds']:.1f} s")
    for w in result.get("warnings", []):
        print(f"warning:    {w}")


def _eval_targets(args, model, objective, cfg, num_classes) -> int:
    """``vpeft eval --target NAME=ROOT[,classes=all]``: a finished run on other test sets (domain generalisation)."""
    size = (cfg.data.img_size,) * 2 if cfg.data.img_size else model.input_size
    task = cfg.task.build(cfg.data.normalize, "none", size)
    for text in args.target:
        name, eq, rest = text.partition("=")
        if not eq or not name or not rest:
            raise ConfigError(f"--target {text!r}: write NAME=FOLDER or NAME=FOLDER,classes=all")
        root, *opts = rest.split(",")
        spec = {"root": root, **dict(o.split("=", 1) for o in opts if "=" in o)}
        t = Target.parse(name, spec)
        r = evaluate_target(
            model, objective, task, cfg.data, t, size, num_classes, cfg.train.eval_batch_size or 64, args.device
        )
        if args.json:
            print(json.dumps({"target": name, **r}))
        else:
            print(
                f"{name}: {r['accuracy']:.2f}% ({r['classes']}; all classes {r['accuracy_all']:.2f}%, present "
                f"{r['accuracy_present']:.2f}%, {r['images']} images, {r['classes_present']} classes present)"
            )
    return 0


def cmd_eval(args) -> int:
    import torch

    model, objective, cfg, num_classes = load_run(args.run, device=args.device)
    if args.target:
        return _eval_targets(args, model, objective, cfg, num_classes)
    root = args.data or cfg.data.root
    test_split = resolve_splits(cfg.data, cfg.train.select)[2]
    split = args.split or test_split
    size = (cfg.data.img_size,) * 2 if cfg.data.img_size else model.input_size
    result = RunDir(args.run).read_result() or {}
    trained = result.get("class_names")
    here = layout(cfg.data.format).class_names(Path(root)) if trained and root != cfg.data.root else None
    if here is not None:  # a layout that numbers classes by their names (folder): they must be the run's
        if here != trained:
            missing, extra = sorted(set(trained) - set(here)), sorted(set(here) - set(trained))
            raise DataError(
                f"{root}: its class folders are not the run's, so the labels would not line up (missing: "
                f"{', '.join(missing) or 'none'}; not in the run: {', '.join(extra) or 'none'})"
            )
    # What the run recorded for this very split and data, to compare with (the primary metric).
    same_data = bool(result) and split == test_split and root == cfg.data.root
    if cfg.task.name != "classify":  # a task scored by its own metrics
        tok = {"tokenizer": cfg.task.text_encoder(model, cfg.data)} if cfg.task.inputs == "text" else {}
        ds = load(cfg.data, split, size, None, training=False, root=root, labels=cfg.task.labels, **tok)
        metrics = evaluate_task(
            model,
            objective,
            ds,
            cfg.task.build(cfg.data.normalize),
            cfg.train.eval_batch_size or cfg.train.batch_size,
            torch.device(args.device),
            amp=cfg.train.amp,
        ).compute()
        primary = cfg.task.primary_metric
        recorded = result.get("metrics", {}).get(primary) if same_data else None
        same = recorded is None or math.isclose(metrics[primary], recorded, rel_tol=1e-6, abs_tol=1e-9)
        print(
            json.dumps({"run": str(args.run), "split": split, "metrics": metrics, "recorded": recorded, "same": same})
            if args.json
            else f"{split}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            + (
                f"; recorded {primary} {recorded:.4f} ({'same' if same else 'DIFFERENT'})"
                if recorded is not None
                else ""
            )
        )
        return 0 if same else _differs(args.run, f"{primary} {metrics[primary]:.4f}", f"{recorded:.4f}", result)
    ds = load(cfg.data, split, size, num_classes, training=False, root=root)
    acc, correct, total = evaluate(
        model,
        objective,
        ds,
        cfg.train.eval_batch_size or cfg.train.batch_size,
        cfg.data.normalize,
        torch.device(args.device),
        amp=cfg.train.amp,
    )
    recorded = result["test_acc"] if same_data else None
    same = recorded is None or recorded == acc
    out = {
        "run": str(args.run),
        "split": split,
        "acc": acc,
        "correct": correct,
        "total": total,
        "recorded": recorded,
        "same": same,
    }
    if args.json:
        print(json.dumps(out))
    else:
        line = f"{split} acc: {acc:.2f}% ({correct}/{total})"
        if recorded is not None:
            line += f"; recorded {recorded:.2f}% ({'same' if same else 'DIFFERENT'})"
        print(line)
    return 0 if same else _differs(args.run, f"accuracy {acc:.2f}%", f"{recorded:.2f}%", result)


def _differs(run, got: str, recorded: str, result: dict) -> int:
    """Say on stderr that a re-evaluation disagrees with the recorded result; the exit status 1."""
    dev, amp = result.get("device", {}), result.get("memory", {}).get("dtype", "float32")
    where = dev.get("type", "?") if isinstance(dev, dict) else dev
    print(
        f"vpeft: error: {run}: the {got} differs from the recorded {recorded}: the weights look corrupted "
        f"({TRAINABLE_FILE} changed since training?). The run was trained on {where} in {amp}; evaluating on "
        "another device or precision can move a few predictions. Retrain it with 'vpeft train --config "
        f"{shlex.quote(str(Path(run) / CONFIG_FILE))} --out {shlex.quote(str(run))} --overwrite'",
        file=sys.stderr,
    )
    return 1


def cmd_measure(args) -> int:
    rows = []
    for method in args.method or ["linear"]:
        r = measure(
            args.backbone,
            method,
            args.objective,
            batch_size=args.batch_size,
            num_classes=args.num_classes,
            timing=not args.no_timing,
            device=args.device,
            selector=args.selector,
            amp=args.amp,
            warmup=args.warmup,
            repeats=args.repeats,
            inference=args.inference,
            inference_batch_sizes=tuple(args.inference_batch_sizes),
            task=args.task,
        )
        rows.append(r)
        if not args.json:
            keys = [k for k in MEASURE_KEYS + AMP_KEYS + ("cuda_max_memory_allocated",) if k in r]
            print(
                f"{r['method']} x {r['objective']}: "
                + ", ".join(
                    f"{k}={r[k]:,}"
                    if isinstance(r[k], int)
                    else f"{k}={r[k]:.3f}"
                    if isinstance(r[k], float)
                    else f"{k}={r[k]}"
                    for k in keys
                ),
                flush=True,
            )
            for i in r.get("inference", []):
                print(
                    f"  inference batch {i['batch_size']}: {i['latency_seconds'] * 1000:.2f} ms, "
                    f"{i['images_per_second']:,.1f} images/s",
                    flush=True,
                )
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


#: Abbreviations whose full stop does not end a sentence.
_ABBREVIATIONS = ("e.g.", "i.e.", "cf.", "vs.", "etc.", "et al.", "approx.", "resp.")


def first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, whole (a summary line may break mid-sentence)."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    for m in re.finditer(r"[.!?](?=\s|$)", text):
        if not text[: m.end()].endswith(_ABBREVIATIONS):
            return text[: m.end()]
    return text


def cmd_list(args) -> int:
    if args.kind == "backbones":
        for name, e in ZOO.items():
            state = "" if e.file.is_file() else "  [weights missing]"
            kw = ",".join(f"{k}={v}" for k, v in e.kwargs.items())
            print(f"{name}: {e.about}{state}\n    timm {e.arch}:{kw}")
        print("any timm model name works too (random weights, --checkpoint FILE, or --pretrained with network)")
        for family in FAMILIES.names():  # the other families' models, under their prefix
            cls = FAMILIES.get(family)
            if family != "timm" and getattr(cls, "models", ()):
                print(f"{', '.join(f'{family}:{m}' for m in cls.models)}: {first_sentence(cls.__doc__)}")
            for name, e in FAMILY_ZOO.get(family, {}).items():  # its models that ship with weights
                state = "" if e.file.is_file() else "  [weights missing]"
                print(f"{family}:{name}: {e.about}{state}\n    {family}:{e.arch} with vpeft/weights/{e.file.name}")
        return 0
    if args.kind in ("formats", "families"):  # plug-ins without options: name, docstring, what they default to
        registry = FORMATS if args.kind == "formats" else FAMILIES
        for name in registry.names():
            cls = registry.get(name)
            summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
            print(f"{name}: {summary}")
            if args.kind == "formats":
                print(
                    f"    splits (train for last / train for val / val / test): {', '.join(cls.splits)}; "
                    f"augment {cls.augment}; marked by {', '.join(cls.markers)}"
                )
        return 0
    if args.kind == "presets":
        for name, p in sorted(PRESETS.items()):
            obj = dict(p["objective"])
            print(f"{name}: {p['about']}\n    --method {p['method']} --objective {format_spec(obj.pop('name'), obj)}")
        return 0
    registry = {"methods": METHODS, "selectors": SELECTORS, "objectives": OBJECTIVES, "tasks": TASKS}[args.kind]
    if not registry.names():
        print(f"no {args.kind} registered yet")
    for name in registry.names():
        cls = registry.get(name)
        print(f"{name}: {first_sentence(cls.__doc__)}")
        docs = field_docs(cls)
        defaults = cls().to_dict()
        for f in cls.fields():
            print(f"    {f.name} = {defaults[f.name]!r}: {docs.get(f.name, '')}")
    return 0


def cmd_data(args) -> int:
    return {"synth": cmd_data_synth, "check": cmd_data_check}[args.data_command](args)


def cmd_data_check(args) -> int:
    options = apply_overrides({"data": {}}, args.overrides)["data"] if args.overrides else None
    bad = [o for o in args.overrides if not o.startswith("data.")]
    if bad:
        raise ConfigError(f"vpeft data check takes data.KEY=VALUE options only, got {', '.join(bad)}")
    return 0 if check(args.root, args.suite, args.shot, args.seed, options=options) else 1


def cmd_data_synth(args) -> int:
    if args.suite == "dg":
        if args.tasks:
            raise ConfigError("--tasks names tasks of the default suite; --suite dg writes its own source and targets")
        suite = generate_dg(Path(args.out) / "dg", seed=args.seed, size=args.size, n_test=args.n_test)
        print(Path(args.out) / "dg" / "source")
        for t in suite["targets"].values():
            print(Path(args.out) / "dg" / t["folder"])
        print(Path(args.out) / "dg" / suite["fewshot"]["folder"])
        return 0
    if args.suite == "seg":
        if args.tasks:
            raise ConfigError("--tasks names tasks of the default suite; --suite seg writes one segmentation task")
        print(generate_seg(Path(args.out) / "seg", seed=args.seed, size=args.size, n_test=args.n_test))
        return 0
    if args.suite == "glue":
        if args.tasks:
            raise ConfigError("--tasks names tasks of the default suite; --suite glue writes its own (RTE, STS-B)")
        for root in generate_glue(Path(args.out) / "glue", seed=args.seed):
            print(root)
        return 0
    if args.suite == "coop":
        if args.tasks:
            raise ConfigError("--tasks names tasks of the default suite; --suite coop writes its own (shapes, texture)")
        for root in generate_coop(Path(args.out) / "coop", seed=args.seed, size=args.size, n_test=args.n_test):
            print(root)
        return 0
    known = [*SYNTH_TASKS, *REGRESSION_TASKS]
    unknown = [t for t in args.tasks or [] if t not in known]
    if unknown:
        raise VpeftError(f"unknown synthetic task(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for root in generate(args.out, args.tasks, seed=args.seed, size=args.size, n_test=args.n_test):
        print(root)
    return 0


def cmd_merge(args) -> int:
    out = Path(args.out)
    kind = merged_format(out)  # a bad suffix fails before the run is loaded
    model, _, cfg, num_classes = load_run(args.run)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_merged(model, out, info=run_info(args.run, cfg, model.input_size, num_classes))
    family, name, _ = split_backbone_spec(cfg.backbone.spec)
    print(
        f"wrote {out}: a plain {family} model ({name}) with {cfg.method.name}"
        + (f" and {cfg.selector.name}" if cfg.selector is not None else "")
        + " "
        f"folded in, as {'safetensors' if kind == 'safetensors' else 'a torch state dict'}; load it with "
        "vpeft.load_merged(path), predict with 'vpeft predict --merged'"
    )
    return 0


def _prediction_line(row: dict) -> str:
    item = row["image"] if "image" in row else row["text"].replace("\t", " | ")
    if "value" in row:
        return f"{item}: {row['value']}"
    return f"{item}: " + ", ".join(f"{t['class']} {t['probability']:.3f}" for t in row["top_k"])


def _write_predictions(rows: list[dict], path: Path, top_k: int) -> None:
    """``.json``: the rows as a list; ``.csv``: image (or text), then class, label and probability per rank (or
    value)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(rows, indent=1) + "\n")
        return
    key = "text" if rows and "text" in rows[0] else "image"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        if rows and "value" in rows[0]:
            w.writerow([key, "value"])
            w.writerows([r[key], r["value"]] for r in rows)
            return
        k = max((len(r["top_k"]) for r in rows), default=top_k)
        w.writerow(
            [key]
            + [f"{c}{'' if i == 1 else f'_{i}'}" for i in range(1, k + 1) for c in ("class", "label", "probability")]
        )
        w.writerows(
            [r[key], *(v for t in r["top_k"] for v in (t["class"], t["label"], t["probability"]))] for r in rows
        )


def cmd_predict(args) -> int:
    texts = getattr(args, "texts", None)
    if args.runs:  # shared-trunk DTL mode: one JSON line per image, a label per run
        if texts or args.images is None:
            raise ConfigError("--runs (DTL's shared trunk) predicts images: give --images")
        for row in predict_multitask(args.runs, image_files(args.images), args.batch_size, args.device):
            print(json.dumps(row))
        return 0
    if bool(args.images) == bool(texts):
        raise ConfigError("vpeft predict: give --images (an image model) or --texts FILE (a text run), one of them")
    text_run = bool(args.run) and read_run_config(args.run).task.inputs == "text"
    if texts:
        if not text_run:
            raise ConfigError(
                f"--texts: {args.run or args.merged} is not a text run (it reads images): give --images"
                if args.run
                else "--texts: predicting texts needs the text run itself (--run RUN); a merged file predicts images"
            )
        predictor = Predictor.from_run(args.run, args.device)
        rows = list(predictor.predict_texts(read_texts(texts), args.batch_size, args.top_k, not args.no_progress))
        if args.output:
            if Path(args.output).suffix.lower() not in (".csv", ".json"):
                raise ConfigError(f"--output {args.output}: write predictions to a .csv or a .json file")
            _write_predictions(rows, Path(args.output), args.top_k)
            print(f"wrote {len(rows)} prediction(s) to {args.output}")
        else:
            for row in rows:
                print(json.dumps(row) if args.json else _prediction_line(row), flush=True)
        return 0
    if text_run:
        raise ConfigError(
            f"{args.run} is a text run: give the examples with --texts FILE (one per line, a pair "
            "tab-separated), not --images"
        )
    predictor = (
        Predictor.from_run(args.run, args.device) if args.run else Predictor.from_merged(args.merged, args.device)
    )
    paths = image_files(args.images)
    if predictor.task_cfg.name == "segment":  # a mask PNG per image, into the --output folder
        if not args.output or Path(args.output).suffix.lower() in (".csv", ".json"):
            raise ConfigError(
                f"--output {args.output or '(not given)'}: a segment run writes one mask PNG per image; name a folder "
                "with --output DIR"
            )
        prompts = prompt_mask_files(paths, args.prompt_masks) if args.prompt_masks else None
        n = 0
        rows = write_masks(predictor, paths, args.output, args.batch_size, not args.no_progress, prompts)
        for row in rows:
            n += 1
            print(
                json.dumps(row) if args.json else f"{row['image']}: {row['mask']} ({row['foreground']:.1f}% foreground)"
            )
        print(f"wrote {n} mask(s) (0/255 PNG at each image's size) to {args.output}/")
        return 0
    if args.prompt_masks:
        raise ConfigError("--prompt-masks: only a segment run (SAM with prompt=box or points) takes prompt masks")
    if args.output and Path(args.output).suffix.lower() not in (".csv", ".json"):
        raise ConfigError(f"--output {args.output}: write predictions to a .csv or a .json file")
    rows = []
    for row in predictor.predict(paths, args.batch_size, args.top_k, progress=not args.no_progress):
        rows.append(row)
        if not args.output:
            print(json.dumps(row) if args.json else _prediction_line(row), flush=True)
    if args.output:
        _write_predictions(rows, Path(args.output), args.top_k)
        print(f"wrote {len(rows)} prediction(s) to {args.output}")
    return 0


def cmd_export(args) -> int:
    out = export(args.run, args.out, args.format)
    print(
        f"wrote {out}: a Hugging Face PEFT adapter (adapter_config.json, adapter_model.safetensors), checked to "
        "reproduce the run's outputs; load it with peft.PeftModel.from_pretrained(vpeft.export.base_model(RUN), "
        f"{str(out)!r})"
    )
    return 0


def cmd_demo(args) -> int:
    if args.suite == "dg":
        run_dg_demo(out=args.out or "runs/demo-dg", epochs=args.epochs, seed=args.seed, progress=not args.no_progress)
        return 0
    if args.suite == "seg":
        run_seg_demo(out=args.out or "runs/demo-seg", epochs=args.epochs, seed=args.seed, progress=not args.no_progress)
        return 0
    if args.suite == "text":
        run_text_demo(
            out=args.out or "runs/demo-text", epochs=args.epochs, seed=args.seed, progress=not args.no_progress
        )
        return 0
    if args.suite == "clip":
        out = args.out or "runs/demo-clip"
        run_clip_demo(out=out, epochs=args.epochs, seed=args.seed, progress=not args.no_progress)
        return 0
    run_demo(
        out=args.out or "runs/demo", epochs=args.epochs, seed=args.seed, progress=not args.no_progress, task=args.task
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpeft",
        description="Parameter-efficient transfer learning for pretrained image, segmentation, CLIP and text models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vpeft {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser(
        "demo",
        help="the embedded default: fine-tune the shipped pretrained ViT on a generated task, print a table and plot",
    )
    d.add_argument(
        "--out",
        default=None,
        help="where data and runs go (default runs/demo; runs/demo-dg, -seg, -clip, -text for the other suites)",
    )
    d.add_argument(
        "--epochs", type=int, default=None, help="epochs per method (default 8; dg: 6; seg: 4; clip: 3; text: 4)"
    )
    d.add_argument(
        "--suite",
        choices=["task", "dg", "seg", "clip", "text"],
        default="task",
        help="task: one generated task, seven methods (default); dg: domain generalisation, a generated source and "
        "four shifted targets, four methods; seg: segmentation with the shipped tiny SAM (decoder-only, GPS, full) "
        "and a mask figure; clip: zero-shot, CoOp, MaPLe and MaPLe + GIST on a tiny random CLIP (mechanics only); "
        "text: all-MiniLM-L6-v2 with a linear head, adapters, adapters + GIST and LoRA on generated sentence pairs",
    )
    d.add_argument(
        "--task",
        default="shapes",
        choices=["shapes", "texture", "count", "location", "orientation", "distance"],
        help="generated task (default shapes)",
    )
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-progress", action="store_true")

    _add_train(sub)

    bench_cli.add_parsers(sub)

    e = sub.add_parser("eval", help="rebuild a run's model from its directory and evaluate it")
    e.add_argument("--run", required=True, help="run directory written by 'vpeft train'")
    e.add_argument("--data", help="task folder (default: the run's)")
    e.add_argument("--split", help="list file stem (default: the run's test split)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--json", action="store_true")
    e.add_argument(
        "--target",
        action="append",
        metavar="NAME=FOLDER[,classes=all]",
        help="evaluate on another test set instead (a target domain; repeat for several)",
    )

    m = sub.add_parser("measure", help="parameters, training memory, step and inference time, random weights")
    m.add_argument("--backbone", required=True, help="timm model name[:key=value,...]")
    m.add_argument("--method", action="append", help="method spec; repeat to compare several")
    m.add_argument("--objective", help="objective spec (default: the task's: ce to classify, seg to segment)")
    m.add_argument(
        "--task",
        help="task spec (default: the backbone's: segment for a sam backbone, with random 0/1 masks, else classify)",
    )
    m.add_argument("--selector", help="selector spec, e.g. gps:k=1 (selected by magnitude: no data here)")
    m.add_argument("--batch-size", type=int, default=2)
    m.add_argument("--num-classes", type=int, default=10, help="classes of the head (classify)")
    m.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda[:N], or meta: memory counted from shapes alone, nothing computed and no step time (a model "
        "too slow for the CPU: sam:vit_b at 1024 px)",
    )
    m.add_argument(
        "--amp",
        choices=["none", "bf16", "fp16"],
        default="none",
        help="autocast dtype of the forward (bf16 works on the CPU too); weight copies are counted apart",
    )
    m.add_argument("--no-timing", action="store_true", help="skip the timed step")
    m.add_argument("--warmup", type=int, default=1, help="untimed steps (and forwards) before the timed ones")
    m.add_argument("--repeats", type=int, default=3, help="timed steps (and forwards); the median is reported")
    m.add_argument(
        "--inference",
        action="store_true",
        help="also time eval forwards (inference mode, same autocast): median latency and images/s",
    )
    m.add_argument("--inference-batch-sizes", type=int, nargs="+", default=[1, 4, 16], metavar="N")
    m.add_argument("--json", action="store_true", help="print a JSON list, one object per method")

    mg = sub.add_parser("merge", help="fold a run's method into the backbone and write a plain timm model")
    mg.add_argument("--run", required=True, help="run directory of a mergeable method (lora, ssf, fact_*, bitfit)")
    mg.add_argument(
        "--out",
        required=True,
        help="output file: .safetensors (with metadata: class names, "
        "preprocessing) or .pth / .pt (a torch state dict carrying the same metadata)",
    )

    pr = sub.add_parser(
        "predict",
        help="predict the classes (values, masks) of image files with a run or a merged model",
        description="Predict with a trained run (--run: any method, objective and selector), a file written by "
        "'vpeft merge' (--merged), or several DTL runs over one shared backbone trunk (--runs). Images are prepared "
        "as the run's test split is (its input size, resize, crop and normalisation); a text run reads --texts, "
        "formatted and tokenised as its data were. Classification prints the "
        "top-k classes with their probabilities (class names where the data has them); segmentation writes a mask "
        "PNG per image into the --output folder (0/255, at the image's size, named by its stem); other tasks print "
        "their value.",
    )
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run directory written by 'vpeft train'")
    src.add_argument("--merged", help="file written by 'vpeft merge'")
    src.add_argument(
        "--runs",
        nargs="+",
        help="run directories of dtl / dtl_plus runs sharing a backbone (prints "
        "one JSON line per image: each run's label)",
    )
    pr.add_argument(
        "--images",
        nargs="+",
        help="image files and/or folders (searched recursively for image files; hidden ones skipped)",
    )
    pr.add_argument(
        "--texts",
        metavar="FILE",
        help="a text run (GLUE tasks): a UTF-8 file of one example per line, a sentence pair separated by a tab; "
        "each is formatted and tokenised as the run's data were",
    )
    pr.add_argument("--top-k", type=int, default=1, help="classes per image, most probable first (default 1)")
    pr.add_argument(
        "--output",
        help="write the predictions to FILE.csv or FILE.json instead of printing them; a segment run: the folder for "
        "the mask PNGs (required)",
    )
    pr.add_argument(
        "--prompt-masks",
        metavar="DIR",
        help="a segment run of SAM with prompt=box or points: the folder of a mask per image (named by the image's "
        "stem, at its size), from which each image's box or point is drawn",
    )
    pr.add_argument("--json", action="store_true", help="print one JSON object per image")
    pr.add_argument("--batch-size", type=int, default=16)
    pr.add_argument("--device", default="cpu")
    pr.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    ex = sub.add_parser("export", help="write a run as another library's adapter (Hugging Face PEFT)")
    ex.add_argument("--run", required=True, help="run directory of a method the format has (peft: lora)")
    ex.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="peft",
        help="peft: adapter_config.json + adapter_model.safetensors for peft.PeftModel.from_pretrained",
    )
    ex.add_argument("--out", required=True, help="output folder")

    ls = sub.add_parser("list", help="registered plug-ins with their options and defaults")
    ls.add_argument(
        "kind", choices=["methods", "selectors", "objectives", "tasks", "presets", "backbones", "formats", "families"]
    )

    data = sub.add_parser("data", help="data tools")
    dsub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    s = dsub.add_parser("synth", help="write synthetic tasks in the VTAB-1K layout (deterministic by seed)")
    s.add_argument("--out", required=True)
    s.add_argument("--tasks", nargs="+", help="task names (default: all)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=32, help="image side in pixels")
    s.add_argument("--n-test", type=int, default=500, help="test images per task")
    s.add_argument(
        "--suite",
        choices=["tasks", "dg", "seg", "coop", "glue"],
        default="tasks",
        help="tasks: the six VTAB-1K-layout tasks (and disc_size); dg: a source task and four shifted "
        "target domains over 128 classes, one of them covering a subset (under OUT/dg); seg: a segmentation task "
        "(shapes on textured backgrounds, with their masks; segfolder layout, OUT/seg); coop: two class-named tasks "
        "in CoOp's layout (split_zhou_*.json beside images/; OUT/coop), for clip_classify; glue: generated sentence "
        "pairs as GLUE's RTE and STS-B TSV files (OUT/glue), for text_classify and text_regress",
    )
    c = dsub.add_parser("check", help="read every list and image of a task folder (or of every task below a root)")
    c.add_argument("root", help="a task folder in the VTAB-1K layout, or a folder of such task folders")
    c.add_argument(
        "--suite",
        choices=FORMATS.names(),
        default="vtab1k",
        help="the layout (data format): a VTAB-1K task (or folder of tasks), a VPT FGVC dataset, a NOAH "
        "few-shot dataset, class folders, CSV lists, or a format plug-in",
    )
    c.add_argument("--shot", type=int, default=16, help="few-shot: shots of the training list to check")
    c.add_argument("--seed", type=int, default=0, help="few-shot: seed of the training list to check")
    c.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="data.KEY=VALUE",
        help="a layout's data option, as a run names it; repeat for several (lists: --set data.lists_root=lists)",
    )
    return parser


def cmd_bench(args):
    return bench_cli.cmd_bench(args)


def cmd_report(args):
    return bench_cli.cmd_report(args)


COMMANDS = {
    "bench": cmd_bench,
    "report": cmd_report,
    "predict": cmd_predict,
    "merge": cmd_merge,
    "export": cmd_export,
    "train": cmd_train,
    "eval": cmd_eval,
    "measure": cmd_measure,
    "list": cmd_list,
    "demo": cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Dotted overrides may come anywhere on a train command line, before or after options.
    if extra and getattr(args, "command", None) == "train" and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    handler = cmd_data if args.command == "data" else COMMANDS[args.command]
    try:
        return handler(args)
    except VpeftError as e:
        if args.verbose:
            raise
        print(f"vpeft: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = {
            "train": "the same command plus --resume continues the run",
            "bench": "the same command continues the sweep (finished runs are kept)",
        }.get(args.command, "")
        print("vpeft: interrupted" + (f"; {again}" if again else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
