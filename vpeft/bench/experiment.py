"""Experiments as files: a suite of tasks x method entries x seeds x a hyperparameter grid, expanded into runs.

An experiment YAML (every key but ``methods`` optional)::

    name: mini-vtab
    suite: vtab1k              # vtab1k | fgvc | fewshot | synth | seg | coop | glue | tasks (seg: segfolder task
                               # folders, task segment unless the experiment, recipe or entry names another;
                               # coop: CoOp's split-file folders, task clip_classify; glue: GLUE task folders,
                               # text_classify, STS-B text_regress, CoLA scored by MCC)
    data_root: ../data/vtab-1k # folder of task folders (suite synth: generated there when missing)
    tasks: [caltech101, dtd]   # subset and order; default: every task folder under data_root. Suite tasks also
                               # takes a mapping, name -> {root, backbone, data, train}: several tasks may read one
                               # folder with their own settings (leave-one-domain-out: the lists of each fold)
    recipe: gist               # per-task settings: a shipped recipe name (vpeft bench recipes) or a YAML path;
                               # its defaults (and task entries) set backbone, data, train and the task
    backbone: {spec: vit_c10_base}
    data: {normalize: inception}
    train: {epochs: 10, select: val}
    methods:
      - linear                                   # a method spec; its label is the spec
      - {label: adapter+gist, method: "adapter:dim=8", objective: gist}
      - {preset: idat-ps-kl}                     # a named method + objective pair
      - {label: gps, method: linear, selector: "gps:k=1", train: {optimizer: adam, weight_decay: 0}}
    seeds: [0, 1, 2]
    list_seeds: [0, 1, 2]      # few-shot list seeds (data.fewshot_seed): every run repeated over them too; reports
                               # average over seeds and list seeds alike
    grid: {train.lr: [0.001, 0.003]}           # cartesian product, dotted keys; an entry may have its own
                                                 # grid, which replaces these values key by key for that entry
    compare: [[adapter, adapter+gist]]           # pairs the report compares

Precedence, lowest first: vpeft's defaults, the recipe's ``defaults``, the recipe's entry for the task, the
experiment's ``backbone`` / ``data`` / ``train`` sections (``task``: the suite's, the recipe's, the experiment's,
then the method entry's, each replacing the one before whole), the task's own (a ``tasks`` mapping), the method entry's
own sections, the grid point, the command line's ``backbone`` / ``data`` / ``train`` values
(``load_experiment(..., train={...})``), the seed and list seed.
A run is identified by the hash of its resolved config, so a finished run is found again whatever the order.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ..config import (
    DataConfig,
    RunConfig,
    apply_overrides,
    expand_backbone_spec,
    load_yaml,
    parse_spec,
    run_identity,
    spec_string,
)
from ..data.entries import layout
from ..data.glue import glue_task
from ..data.synth import TASKS, generate
from ..errors import ConfigError
from ..metrics_text import TASK_METRICS
from ..presets import get_preset

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
SUITE_FORMATS = {
    "vtab1k": "vtab1k",
    "fgvc": "fgvc",
    "fewshot": "fewshot",
    "synth": "vtab1k",
    "seg": "segfolder",
    "coop": "coop",
    "glue": "glue",
    "tasks": None,
}


def _glue_suite_task(task: str):
    """A GLUE task folder's task: ``text_regress`` for STS-B, else ``text_classify`` with the metric GLUE reports
    first (CoLA: Matthews correlation); a folder not named as a GLUE task: ``text_classify``."""
    try:
        t = glue_task(task)
    except ConfigError:
        return "text_classify"
    if t.label_names is None:
        return "text_regress"
    primary = TASK_METRICS[t.name].primary
    return "text_classify" if primary == "accuracy" else {"name": "text_classify", "primary": primary}


#: The task of a suite's runs where neither the experiment, its recipe nor a method entry names one (a callable: by
#: the task folder's name).
SUITE_TASKS = {"seg": "segment", "coop": "clip_classify", "glue": _glue_suite_task}
TOP_KEYS = (
    "name",
    "suite",
    "data_root",
    "tasks",
    "recipe",
    "task",
    "backbone",
    "data",
    "train",
    "methods",
    "seeds",
    "list_seeds",
    "grid",
    "compare",
    "about",
)
RECIPE_KEYS = ("about", "source", "protocol", "defaults", "tasks", "methods", "list_seeds")
ENTRY_KEYS = ("label", "method", "objective", "selector", "task", "preset", "backbone", "data", "train", "grid")


@dataclass
class RunSpec:
    """One run of a sweep: what to train and where."""

    run_id: str
    label: str
    task: str
    seed: int
    grid: dict
    config: dict  # resolved RunConfig dict, data.root absolute
    run_dir: str = ""
    #: The few-shot list seed (``data.fewshot_seed``) where the experiment sweeps ``list_seeds``; None otherwise.
    list_seed: Optional[int] = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "list_seed" or v is not None}


@dataclass
class Experiment:
    name: str
    suite: str
    data_root: Optional[str]
    tasks: list[str]
    recipe: Optional[dict]
    base: dict
    methods: list[dict]
    seeds: list[int]
    grid: dict[str, list]
    compare: list[tuple[str, str]] = field(default_factory=list)
    source: str = "<dict>"
    #: ``backbone`` / ``data`` / ``train`` values from the command line: the last layer, over entries and grid.
    overrides: dict = field(default_factory=dict)
    #: The task of every run (a spec, ``regress`` or ``{name: regress, primary: mae}``); an entry may name its own.
    task: Any = None
    #: List seeds (``data.fewshot_seed``) every run is repeated over, besides ``seeds``; reports average over both.
    list_seeds: Optional[list[int]] = None
    #: Per-task settings from a ``tasks`` mapping: ``{task: {root, backbone, data, train}}``.
    task_entries: dict = field(default_factory=dict)


def list_recipes() -> dict[str, str]:
    """Shipped recipe names and their one-line descriptions."""
    out = {}
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        out[path.stem] = (yaml.safe_load(path.read_text()) or {}).get("about", "").strip().split("\n")[0]
    return out


def load_recipe(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown recipe {name_or_path!r}; shipped recipes: {', '.join(list_recipes())}")
    data = load_yaml(path)
    for key in data:
        if key not in RECIPE_KEYS:
            raise ConfigError(f"{path}: unknown recipe key {key!r} (valid: {', '.join(RECIPE_KEYS)})")
    for task, entry in (data.get("tasks") or {}).items():
        _check_shots(entry, f"{path}: tasks.{task}")
    data["_path"] = str(path)
    return data


#: What a recipe's per-shot entry (``tasks.<task>.shots.<k>``) may set.
SHOT_ENTRY_KEYS = ("backbone", "data", "train", "options")


def _check_shots(entry: Any, where: str) -> None:
    """A recipe task entry's ``shots``: ``{k: {backbone, data, train, options}}`` with whole-number keys ``k``."""
    shots = entry.get("shots") if isinstance(entry, dict) else None
    if shots is None:
        return
    if not isinstance(shots, dict) or not shots:
        raise ConfigError(f"{where}.shots must map a shot count (data.shot) to settings, got {shots!r}")
    for k, v in shots.items():
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConfigError(f"{where}.shots: key {k!r} is not a shot count (a whole number >= 1, as data.shot)")
        bad = sorted(set(v) - set(SHOT_ENTRY_KEYS)) if isinstance(v, dict) else None
        if bad is None or bad:
            raise ConfigError(
                f"{where}.shots.{k}: expected a mapping of {', '.join(SHOT_ENTRY_KEYS)}, got "
                + (f"key {bad[0]!r}" if bad else repr(v))
            )


def _deep_merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in (b or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("method", "objective", "selector"):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _entry(raw: Any, where: str) -> dict:
    if isinstance(raw, str):
        name, _ = parse_spec(raw)
        return {"label": raw, "method": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a method entry must be a spec string or a mapping, got {raw!r}")
    bad = [k for k in raw if k not in ENTRY_KEYS]
    if bad:
        raise ConfigError(f"{where}: unknown key {bad[0]!r} in a method entry (valid: {', '.join(ENTRY_KEYS)})")
    entry = expand_backbone_spec(dict(raw))
    if "preset" in entry:
        preset = get_preset(entry["preset"])
        entry.setdefault("method", preset["method"])
        obj = entry.get("objective")
        if isinstance(obj, dict) and "name" not in obj:  # options on top of the preset's objective
            entry["objective"] = {**preset["objective"], **obj}
        else:
            entry.setdefault("objective", copy.deepcopy(preset["objective"]))
        entry.setdefault("label", entry["preset"])
    if "method" not in entry:
        raise ConfigError(f"{where}: a method entry needs 'method' or 'preset'")
    if "label" not in entry:
        parts = [_spec_text(entry["method"])]
        if entry.get("objective") and _spec_text(entry["objective"]) != "ce":
            parts.append(_spec_text(entry["objective"]))
        if entry.get("selector"):
            parts.append(_spec_text(entry["selector"]))
        entry["label"] = "+".join(parts)
    return entry


def _spec_text(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        rest = ",".join(f"{k}={v}" for k, v in spec.items() if k != "name")
        return spec.get("name", "?") + (f":{rest}" if rest else "")
    return str(spec)


def load_experiment(source: str | Path | dict, **cli) -> Experiment:
    """Read an experiment file (or mapping); ``cli`` keys (suite, data_root, tasks, recipe, seeds, methods, ...)
    override the file's."""
    where = str(source) if not isinstance(source, dict) else "<experiment>"
    data = copy.deepcopy(source) if isinstance(source, dict) else (load_yaml(source) if source else {})
    expand_backbone_spec(data)
    overrides: dict = {}
    for k, v in cli.items():
        if v is None:
            continue
        if k in ("backbone", "data", "train") and isinstance(v, dict):
            overrides[k] = _deep_merge(overrides.get(k) or {}, v)
        elif k == "tasks" and isinstance(data.get("tasks"), dict) and not isinstance(v, dict):
            # --tasks picks from a tasks mapping: those tasks, with their settings
            names = [v] if isinstance(v, str) else list(v)
            unknown = [t for t in names if t not in data["tasks"]]
            if unknown:
                raise ConfigError(f"{where}: no task {unknown[0]!r} (its tasks: {', '.join(data['tasks'])})")
            data["tasks"] = {t: data["tasks"][t] for t in names}
        else:
            data[k] = v
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"{where}: unknown experiment key {key!r} (valid: {', '.join(TOP_KEYS)})")
    suite = data.get("suite", "tasks" if data.get("tasks") and not data.get("data_root") else "vtab1k")
    if suite not in SUITE_FORMATS:
        raise ConfigError(f"{where}: unknown suite {suite!r} (valid: {', '.join(SUITE_FORMATS)})")
    recipe = load_recipe(data["recipe"]) if data.get("recipe") else None
    raw_methods = data.get("methods") or (recipe or {}).get("methods")
    if not raw_methods:
        raise ConfigError(f"{where}: no methods given (a 'methods' list, --method, or a recipe with methods)")
    methods = [_entry(m, f"{where}: methods[{i}]") for i, m in enumerate(raw_methods)]
    labels = [m["label"] for m in methods]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(f"{where}: method labels must differ; repeated: {', '.join(dup)} (give each a 'label')")
    seeds = _seed_list(data.get("seeds", [0]), "seeds", where)
    # A recipe may carry the list seeds its authors average over; the experiment's (or --list-seeds) win.
    raw_list_seeds = data.get("list_seeds", (recipe or {}).get("list_seeds"))
    list_seeds = _seed_list(raw_list_seeds, "list_seeds", where) if raw_list_seeds is not None else None
    grid = _check_grid(data.get("grid"), where)
    for i, m in enumerate(methods):
        if "grid" in m:
            m["grid"] = _check_grid(m["grid"], f"{where}: methods[{i}] ({m['label']})")
    compare = [tuple(p) for p in data.get("compare") or []]
    if cli.get("methods") is not None:  # methods given on the command line: the file's pairs may name others
        compare = [p for p in compare if len(p) == 2 and all(x in labels for x in p)]
    for pair in compare:
        if len(pair) != 2 or any(p not in labels for p in pair):
            raise ConfigError(f"{where}: compare entry {list(pair)} must name two method labels of {labels}")
    base = {k: data.get(k) or {} for k in ("backbone", "data", "train")}
    tasks = data.get("tasks")
    tasks = [tasks] if isinstance(tasks, str) else tasks
    task_entries = _task_entries(tasks, where) if isinstance(tasks, dict) else {}
    if tasks and len(set(tasks)) != len(tasks):
        raise ConfigError(f"{where}: tasks repeat: {tasks}")
    return Experiment(
        name=data.get("name") or (Path(where).stem if not isinstance(source, dict) and source else "sweep"),
        suite=suite,
        data_root=data.get("data_root"),
        tasks=list(tasks) if tasks else [],
        recipe=recipe,
        base=base,
        methods=methods,
        seeds=seeds,
        grid=grid,
        compare=compare,
        source=where,
        overrides=overrides,
        task=data.get("task"),
        list_seeds=list_seeds,
        task_entries=task_entries,
    )


def _seed_list(seeds: Any, key: str, where: str) -> list[int]:
    seeds = [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)
    ):
        raise ConfigError(f"{where}: {key} must be a whole number or a non-empty list of them, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: {key} repeat: {seeds}")
    return seeds


#: What a task of a ``tasks`` mapping may set: its folder (relative to ``data_root``) and its own sections.
TASK_ENTRY_KEYS = ("root", "backbone", "data", "train")


def _task_entries(tasks: dict, where: str) -> dict:
    """A ``tasks`` mapping, ``{name: {root, backbone, data, train}}`` (a null entry: the folder of that name)."""
    out = {}
    for name, entry in tasks.items():
        entry = entry or {}
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: tasks.{name} must be a mapping of {', '.join(TASK_ENTRY_KEYS)}, got {entry!r}")
        unknown = sorted(set(entry) - set(TASK_ENTRY_KEYS))
        if unknown:
            raise ConfigError(
                f"{where}: tasks.{name}: unknown key(s) {', '.join(unknown)} (valid: {', '.join(TASK_ENTRY_KEYS)})"
            )
        out[str(name)] = entry
    return out


def _check_grid(grid: Any, where: str) -> dict:
    if grid is None:
        return {}
    if not isinstance(grid, dict):
        raise ConfigError(f"{where}: grid must be a mapping of dotted keys to lists of values, got {grid!r}")
    for k, v in grid.items():
        if "." not in k or not isinstance(v, list) or not v:
            raise ConfigError(f"{where}: grid entry {k!r} must be a dotted key with a non-empty list of values")
    return grid


def _points(grid: dict) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))] or [{}]


def discover_tasks(root: Path, fmt: str) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and layout(fmt).is_task(p))


def task_dirs(exp: Experiment) -> list[tuple[str, Path]]:
    """(task name, folder) for every task of the experiment, checked to exist."""
    if exp.suite == "synth":
        root = Path(exp.data_root or "synth-data")
        names = exp.tasks or list(TASKS)
        unknown = [t for t in names if t not in TASKS]
        if unknown:
            raise ConfigError(f"unknown generated task {unknown[0]!r} (suite synth has: {', '.join(TASKS)})")
        missing = [t for t in names if not (root / t / "test.txt").is_file()]
        if missing:
            generate(root, missing)
        return [(t, root / t) for t in names]
    if exp.suite == "tasks":
        if not exp.tasks:
            raise ConfigError("suite 'tasks' needs a list of task folders ('tasks' or --tasks)")
        out = []
        for t in exp.tasks:
            folder = exp.task_entries.get(t, {}).get("root", t)
            p = Path(exp.data_root, folder) if exp.data_root else Path(folder)
            if not p.is_dir():
                raise ConfigError(f"task folder {p} does not exist" + (f" (tasks.{t}.root)" if t != folder else ""))
            # A task of a mapping keeps its name (several may read one folder: leave-one-domain-out).
            out.append((t if exp.task_entries else p.name, p))
        return out
    if not exp.data_root:
        raise ConfigError(f"suite {exp.suite!r} needs data_root (--data-root): the folder holding its task folders")
    root = Path(exp.data_root)
    if not root.is_dir():
        raise ConfigError(f"data_root {root} is not a folder")
    fmt = (exp.overrides.get("data") or {}).get("format") or exp.base["data"].get("format") or SUITE_FORMATS[exp.suite]
    found = discover_tasks(root, fmt)
    names = exp.tasks or found
    missing = [t for t in names if t not in found]
    if missing:
        raise ConfigError(
            f"{root}: no {fmt} task folder for {', '.join(missing)} (found: {', '.join(found) or 'none'})"
        )
    if not names:
        raise ConfigError(f"{root}: no {fmt} task folders found")
    return [(t, root / t) for t in names]


def _recipe_for(recipe: Optional[dict], task: str, shot: Optional[int] = None, data_root: Optional[str] = None) -> dict:
    """The recipe's settings for a run of ``task``: its ``defaults``, then the task's entry, then (where the entry has
    ``shots``, per-shot settings as DTL's few-shot scripts have) the entry's settings for the run's ``data.shot``.

    A recipe cannot know where the data is: the relative ``root`` of a target it names (``data.extra_tests``) is
    under the experiment's ``data_root``, as the task folders are (made absolute here)."""
    if not recipe:
        return {}
    entry = copy.deepcopy((recipe.get("tasks") or {}).get(task) or {})
    shots = entry.pop("shots", None)
    out = _deep_merge(copy.deepcopy(recipe.get("defaults") or {}), entry)
    if shots is not None and shot is not None:
        if shot not in shots:
            raise ConfigError(
                f"recipe {Path(recipe.get('_path', '?')).stem}: task {task!r} has settings for data.shot "
                f"{', '.join(map(str, sorted(shots)))}, not {shot}: set data.shot to one of them"
            )
        out = _deep_merge(out, shots[shot])
    targets = (out.get("data") or {}).get("extra_tests")
    if data_root and isinstance(targets, dict):
        for name, spec in targets.items():
            root = spec.get("root") if isinstance(spec, dict) else spec
            if isinstance(root, str) and root and not Path(root).is_absolute():
                root = str((Path(data_root) / root).resolve())
                targets[name] = {**spec, "root": root} if isinstance(spec, dict) else root
    return out


def _run_shot(exp: Experiment, task: str, entry: dict, point: dict) -> Optional[int]:
    """The ``data.shot`` of a run, from the layers above the recipe's shot settings (highest first: the command line,
    the grid point, the method entry, the experiment's task entry and sections, the recipe's task entry and
    defaults; else DataConfig's default); null where the value is not a whole number (the config check names it)."""
    recipe = exp.recipe or {}
    layers = (
        exp.overrides.get("data"),
        {"shot": point["data.shot"]} if "data.shot" in point else None,
        entry.get("data"),
        exp.task_entries.get(task, {}).get("data"),
        exp.base.get("data"),
        ((recipe.get("tasks") or {}).get(task) or {}).get("data"),
        (recipe.get("defaults") or {}).get("data"),
    )
    shot = next((d["shot"] for d in layers if isinstance(d, dict) and "shot" in d), DataConfig.shot)
    try:
        return int(shot) if not isinstance(shot, bool) and int(shot) == float(shot) else None
    except (TypeError, ValueError):
        return None


def _apply_plugin_options(data: dict, options: dict) -> None:
    """A recipe's per-task ``options: {plugin name: {key: value}}`` fill in options of the run's method, objective or
    selector of that name that the entry does not set itself (e.g. DTL+'s kernel size or GPS's K per task)."""
    for k in ("method", "objective", "selector"):
        spec = data.get(k)
        if spec is None:
            continue
        name, kwargs = (
            parse_spec(spec)
            if isinstance(spec, str)
            else (spec.get("name"), {a: b for a, b in spec.items() if a != "name"})
        )
        if name in options:
            data[k] = {"name": name, **options[name], **kwargs}


def run_hash(config: dict) -> str:
    return hashlib.sha1(json.dumps(run_identity(config), sort_keys=True, default=str).encode()).hexdigest()[:12]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "-", text).strip("-")[:60]


def expand(exp: Experiment, out_dir: str | Path) -> list[RunSpec]:
    """Every run of the experiment, in a stable order (task, method, grid point, seed), validated."""
    out_dir = Path(out_dir).resolve()  # absolute: workers (and Ray nodes) need not share our working directory
    fmt_default = SUITE_FORMATS[exp.suite]
    runs: list[RunSpec] = []
    for task, folder in task_dirs(exp):
        for entry in exp.methods:
            # An entry's own grid replaces the experiment's values key by key (e.g. an lr range per method).
            for point in _points({**exp.grid, **entry.get("grid", {})}):
                recipe = _recipe_for(exp.recipe, task, _run_shot(exp, task, entry, point), exp.data_root)
                for seed, list_seed in itertools.product(exp.seeds, exp.list_seeds or [None]):
                    data: dict = {"data": {"format": fmt_default} if fmt_default else {}}
                    data = _deep_merge(data, {k: v for k, v in recipe.items() if k in ("backbone", "data", "train")})
                    data = _deep_merge(data, exp.base)
                    own = exp.task_entries.get(task, {})
                    data = _deep_merge(data, {k: own[k] for k in ("backbone", "data", "train") if k in own})
                    data = _deep_merge(data, {k: entry[k] for k in ("backbone", "data", "train") if k in entry})
                    suite_task = SUITE_TASKS.get(exp.suite)
                    suite_task = suite_task(task) if callable(suite_task) else suite_task
                    for task_spec in (suite_task, recipe.get("task"), exp.task):
                        if task_spec is not None:
                            data["task"] = copy.deepcopy(task_spec)
                    for k in ("method", "objective", "selector", "task"):
                        if entry.get(k) is not None:
                            data[k] = copy.deepcopy(entry[k])
                    _apply_plugin_options(data, recipe.get("options") or {})
                    data = apply_overrides(data, [f"{k}={json.dumps(v)}" for k, v in point.items()])
                    data = _deep_merge(data, exp.overrides)
                    data.setdefault("train", {})["seed"] = seed
                    if list_seed is not None:
                        data.setdefault("data", {})["fewshot_seed"] = list_seed
                    data.setdefault("data", {})["root"] = str(folder.resolve())
                    where = f"{exp.source}: task {task}, method {entry['label']}"
                    try:
                        cfg = RunConfig.from_dict(data, where=where)
                    except ConfigError as e:
                        raise ConfigError(f"{where}: {e}") from None
                    if list_seed is not None and not _reads_list_seed(cfg.data):
                        raise ConfigError(
                            f"{where}: list_seeds vary data.fewshot_seed, which data format {cfg.data.format!r} does "
                            "not read (format fewshot does, and lists where a list file name holds {seed}): every "
                            "list seed would train the same run again"
                        )
                    resolved = cfg.to_dict()
                    if resolved["backbone"].get("checkpoint"):
                        resolved["backbone"]["checkpoint"] = str(Path(resolved["backbone"]["checkpoint"]).resolve())
                    rid = run_hash(resolved)
                    gtxt = "".join(f"_{k.split('.')[-1]}={v}" for k, v in point.items())
                    lseed = f"_l{list_seed}" if list_seed is not None else ""
                    name = f"{_slug(task)}__{_slug(entry['label'])}{_slug(gtxt)}__s{seed}{lseed}__{rid[:8]}"
                    runs.append(
                        RunSpec(
                            run_id=rid,
                            label=entry["label"],
                            task=task,
                            seed=seed,
                            grid=point,
                            config=resolved,
                            run_dir=str(out_dir / "runs" / name),
                            list_seed=list_seed,
                        )
                    )
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        dup = next(r for r in runs if ids.count(r.run_id) > 1)
        raise ConfigError(
            f"two entries resolve to the same run ({dup.task}, {dup.label}, seed {dup.seed}"
            + (f", list seed {dup.list_seed}" if dup.list_seed is not None else "")
            + "): "
            "give the method entries different settings"
        )
    return runs


def _reads_list_seed(dc) -> bool:
    """Whether a run's data depends on ``data.fewshot_seed``: NOAH's few-shot lists, list files named by it, or
    CoOp's split file sampled by Dassl's rule (``data.shot`` >= 1)."""
    if dc.format == "fewshot" or (dc.format == "coop" and dc.shot >= 1):
        return True
    return dc.format == "lists" and any(
        "{seed}" in name for v in dc.lists.values() for name in (v if isinstance(v, list) else [v])
    )


def describe(exp: Experiment) -> str:
    m = ", ".join(e["label"] for e in exp.methods)
    g = " x ".join(f"{k}{v}" for k, v in exp.grid.items())
    rec = f", recipe {Path(exp.recipe['_path']).stem}" if exp.recipe else ""
    ls = f"; list seeds {exp.list_seeds}" if exp.list_seeds else ""
    return f"{exp.name}: suite {exp.suite}{rec}; methods {m}; seeds {exp.seeds}{ls}" + (f"; grid {g}" if g else "")


def spec_label(cfg: RunConfig) -> str:
    return spec_string(cfg.method)
