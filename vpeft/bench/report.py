"""Results tables and plots from run directories, in the papers' shape.

``collect`` reads every ``result.json`` under a folder (a sweep's ``runs/`` or any tree of ``vpeft train`` runs);
``write_report`` writes:

- ``results.csv``: one row per run;
- ``summary.md`` / ``summary.csv``: one row per method label, one column per task (mean over seeds, with the spread
  over seeds), VTAB group means where the tasks are VTAB-1K's, the mean over tasks (computed per seed, then averaged,
  so its spread is the seed-to-seed spread of the suite mean), trainable parameters without the head and training
  memory (parameters, gradients, optimizer state and saved activations at the training batch, as measured by the
  trainer);
- ``compare.md``: for each pair (A, B), B - A per task, paired by seed, with its spread, and on the mean over tasks;
- ``acc_vs_params.png`` and ``acc_vs_memory.png``: one point per method label, log-scale x.

The tables score each run by its task's primary metric: test accuracy for classification (and for records written
before tasks), else the metric its ``result.json`` names (``primary_metric``, e.g. Pearson for ``regress``), which
``--tune val`` maximises or, where lower is better, minimises.
"""

from __future__ import annotations

import csv
import json
import textwrap
from collections import defaultdict
from pathlib import Path
from statistics import mean, pstdev
from typing import Optional

import yaml

from ..data.suites import GROUPS, VTAB_TASKS
from ..errors import ConfigError, VpeftError
from ..rundir import BENCH_FILE, FAILED_FILE, RESULT_FILE, RunDir


def metric_key(record: dict, split: str) -> str:
    """The record's key of its primary metric on ``split`` (``val``, ``test``): ``test_acc`` / ``val_acc`` for
    accuracy, else ``<split>_<metric>``."""
    name = record.get("primary_metric")
    return f"{split}_{name}" if name else f"{split}_acc"


#: Metrics that result.json holds as fractions and reports show in percent (x 100), as GLUE and the papers report
#: them, so a mean over tasks scored by accuracy and by correlation (Table 3's) averages like with like.
PERCENT_OF_FRACTION = ("pearson", "spearman")


def _metric_title(metric: str) -> str:
    """A metric as a table's heading names it: ``dice`` is ``dice (Dice per image, %)``, ``pearson``
    ``pearson (x 100)``."""
    if " / " in metric:  # tasks scored by different metrics
        return " / ".join(_metric_title(m) for m in metric.split(" / "))
    if metric in PERCENT_OF_FRACTION:
        return f"{metric} (x 100)"
    return f"{metric} ({SEG_METRICS[metric]}, %)" if metric in SEG_METRICS else metric


def _metric_of(records: list[dict]) -> str:
    """The primary metric the records share (``accuracy`` unless they name another), or the names joined."""
    return " / ".join(sorted({r.get("primary_metric") or "accuracy" for r in records}))


def _in_report(metric: str, value):
    """A metric's value as reports show it (:data:`PERCENT_OF_FRACTION` x 100)."""
    return value * 100.0 if metric in PERCENT_OF_FRACTION and isinstance(value, (int, float)) else value


def collect(root: str | Path) -> list[dict]:
    """One record per finished run under ``root`` (or the records of a report's ``results.jsonl``)."""
    root = Path(root)
    if root.is_file() and root.suffix == ".jsonl":
        records = []
        for i, line in enumerate(root.read_text().splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError as e:
                    raise ConfigError(f"{root}:{i}: not a JSON record ({e})") from None
        return records
    if root.is_file():
        raise ConfigError(f"{root} is a file: give a results folder or a report's results.jsonl")
    if not root.is_dir():
        raise ConfigError(f"results folder {root} does not exist")
    records = []
    paths = sorted(root.rglob(RESULT_FILE))
    planned = _planned(root)
    if planned is not None:
        paths = [p for p in paths if p.parent.name in planned]
    for path in paths:
        r = _read_json(path)
        bench = path.parent / BENCH_FILE
        meta = _read_json(bench) if bench.is_file() else {}
        base_label = meta.get("label") or run_label(r, path.parent)
        grid = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in (meta.get("grid") or {}).items())
        record = {
            "label": f"{base_label} ({grid})" if grid else base_label,
            "base_label": base_label,
            "grid": grid,
            "task": meta.get("task") or r["task"],
            "seed": r["seed"],
            **({"list_seed": meta["list_seed"]} if meta.get("list_seed") is not None else {}),
            "test_acc": r.get("test_acc"),
            "val_acc": r.get("val_acc"),
            "selected_epoch": r.get("selected_epoch"),
            "select": r.get("protocol", {}).get("select"),
            "method": r["method"],
            "objective": r["objective"],
            "backbone": r["backbone"],
            "trainable_params_no_head": r["trainable_params_no_head"],
            "trainable_params": r["trainable_params"],
            "train_memory_bytes": r["memory"].get("train_memory_bytes"),
            "saved_activation_bytes": r["memory"].get("saved_activation_bytes"),
            "memory_batch": r["memory"].get("batch_size"),
            "memory_dtype": r["memory"].get("dtype"),
            "memory_device": r["memory"].get("device"),
            "train_seconds": r.get("train_seconds"),
            "run_dir": str(path.parent.relative_to(root)),
        }
        if r.get("tests"):  # target domains (data.extra_tests): their accuracies, both class handlings
            record["tests"] = {
                k: {m: v[m] for m in ("accuracy", "accuracy_all", "accuracy_present", "classes")}
                for k, v in r["tests"].items()
            }
        if r.get("primary_metric", "accuracy") != "accuracy":  # a task scored by another metric than accuracy
            record.update({"primary_metric": r["primary_metric"], "higher_is_better": r.get("higher_is_better", True)})
            for split, metrics in (("test", r.get("metrics")), ("val", r.get("val_metrics"))):
                record.update({f"{split}_{k}": _in_report(k, v) for k, v in (metrics or {}).items()})
        records.append(record)
    return records


def _selector_name(result: dict, run_dir: Path) -> str | None:
    """The name of the run's selector (``gps``), from its result or, for results that do not name it, the run's
    ``config.yaml``; null for a run without one."""
    spec = result.get("selector")
    if spec is None and "selection" in result:  # a selector ran: its name is in the run's config
        try:
            spec = RunDir(run_dir).read_config().get("selector")
        except (VpeftError, OSError):
            return "selector"
    if isinstance(spec, dict):
        return spec.get("name")
    return spec.split(":")[0] if isinstance(spec, str) and spec else None


def run_label(result: dict, run_dir: Path) -> str:
    """A run's label outside a sweep (whose runs carry their entry's label): its method, its objective unless
    ``ce``, and its selector (``linear+gps``)."""
    parts = (result["method"], result["objective"], _selector_name(result, run_dir))
    return "+".join(x for x in parts if x and x != "ce")


def tune(records: list[dict], split: str = "val") -> tuple[list[dict], dict]:
    """Hyper-parameter selection on validation: for each method label, task and seed, keep the grid point whose
    primary metric on ``split`` (the selected epoch's validation accuracy, or the metric the record names) is best:
    highest, or lowest where lower is better; ties go to the first grid point in plan order.

    Returns the kept records, labelled with the method label alone (their ``grid`` says what was chosen), and
    ``{label: {grid point: times chosen}}``. Runs without a grid pass through unchanged.
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r.get("base_label", r["label"]), r["task"], replicate(r))].append(r)
    kept, chosen = [], defaultdict(lambda: defaultdict(int))
    for (label, _, _), rs in groups.items():
        key = metric_key(rs[0], split)
        missing = [r["run_dir"] for r in rs if r.get(key) is None]
        if missing and len(rs) > 1:
            raise ConfigError(f"cannot select on {key}: run {missing[0]} has none (trained with select=last?)")
        pick = max if rs[0].get("higher_is_better", True) else min
        best = pick(rs, key=lambda r: r.get(key) or 0.0)  # max and min keep the first of equals
        kept.append({**best, "label": label})
        if len(rs) > 1:  # a run outside any grid (e.g. the sweep a grid was run around) is "as configured"
            chosen[label][best.get("grid") or "as configured"] += 1
    return kept, {k: dict(v) for k, v in chosen.items()}


def _planned(root: Path) -> Optional[set[str]]:
    """A sweep folder's run-directory names of its current plan (not those of an edited-away entry); else None."""
    plan = root / "runs.jsonl"
    if not plan.is_file():
        return None
    return {Path(json.loads(line)["run_dir"]).name for line in plan.read_text().splitlines() if line.strip()}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable JSON file ({e}); rerun that run or delete its folder") from None


def _failures(root: Path) -> list[dict]:
    if root.is_file():  # a report's results.jsonl: its failures.json beside it
        path = root.parent / "failures.json"
        return json.loads(path.read_text()) if path.is_file() else []
    out = []
    planned = _planned(root)  # a sweep folder: only its current plan's runs, as collect()
    for path in sorted(root.rglob(FAILED_FILE)):
        run = RunDir(path.parent)
        if run.state != "failed":  # finished after all (a worker that died after writing its result)
            continue
        if planned is not None and path.parent.name not in planned:
            continue
        out.append({"run": path.parent.name, "error": run.read_failure()["error"], **run.read_bench()})
    return out


def _order(roots: list[Path], records: list[dict]) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """Labels and tasks in the experiments' order (then as found), and the experiments' compare pairs."""
    labels = list(dict.fromkeys(r["label"] for r in records))
    tasks = list(dict.fromkeys(r["task"] for r in records))
    want_labels: list[str] = []
    want_tasks: list[str] = []
    pairs: list[tuple[str, str]] = []
    for root in roots:
        exp = (root.parent if root.is_file() else root) / "experiment.yaml"
        if exp.is_file():
            meta = yaml.safe_load(exp.read_text()) or {}
            want_labels += meta.get("labels", [])
            want_tasks += meta.get("tasks", [])
            pairs += [tuple(p) for p in meta.get("compare", []) if tuple(p) not in pairs]
    labels = [x for x in dict.fromkeys(want_labels) if x in labels] + [x for x in labels if x not in want_labels]
    tasks = [t for t in dict.fromkeys(want_tasks) if t in tasks] + [t for t in tasks if t not in want_tasks]
    # An experiment's pair whose labels this report does not have (a grid reported untuned) is left out.
    pairs = [p for p in pairs if all(x in labels for x in p)]
    vtab = [t for t in VTAB_TASKS if t in tasks]
    if vtab and len(vtab) == len(tasks):  # the papers' column order
        tasks = vtab
    return labels, tasks, pairs


def _ms(values: list[float]) -> tuple[float, float]:
    return mean(values), (pstdev(values) if len(values) > 1 else 0.0)


def summarise(records: list[dict], labels: list[str], tasks: list[str], key: Optional[str] = None) -> dict:
    """label -> per-task (mean, std, n), per-seed suite means, counts, memory; of each run's primary metric on the
    test split, or of the record key ``key`` (``test_iou``)."""
    by = defaultdict(list)
    for r in records:
        by[(r["label"], r["task"])].append(r)
    out = {}
    for label in labels:
        row: dict = {"tasks": {}, "groups": {}}
        per_seed: dict[tuple, dict[str, float]] = defaultdict(dict)
        for t in tasks:
            rs = by.get((label, t), [])
            if rs:
                m, s = _ms([r[key or metric_key(r, "test")] for r in rs])
                row["tasks"][t] = (m, s, len(rs))
                for r in rs:
                    per_seed[replicate(r)][t] = r[key or metric_key(r, "test")]
        complete = {s: accs for s, accs in per_seed.items() if len(accs) == len(tasks)}
        row["mean"] = _ms([mean(a.values()) for a in complete.values()]) + (len(complete),) if complete else None
        for g in GROUPS:
            gt = [t for t in tasks if VTAB_TASKS.get(t, (0, ""))[1] == g]
            if gt and complete:
                row["groups"][g] = _ms([mean(a[t] for t in gt) for a in complete.values()])
        if len(row["groups"]) == len(GROUPS):  # the other average papers report: the mean of the group means
            per = [
                mean(mean(a[t] for t in tasks if VTAB_TASKS.get(t, (0, ""))[1] == g) for g in GROUPS)
                for a in complete.values()
            ]
            row["mean_of_groups"] = _ms(per)
        rs = [r for r in records if r["label"] == label]
        row["params"] = mean(r["trainable_params_no_head"] for r in rs) if rs else None
        mem = [r["train_memory_bytes"] for r in rs if r["train_memory_bytes"]]
        row["memory"] = mean(mem) if mem else None
        row["memory_batch"] = rs[0]["memory_batch"] if rs else None
        row["seconds"] = mean(r["train_seconds"] for r in rs if r["train_seconds"] is not None) if rs else None
        row["runs"] = len(rs)
        out[label] = row
    return out


def _fmt_params(n: Optional[float]) -> str:
    if n is None:
        return "-"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}K"
    return f"{n:.0f}"


def _cell(ms, spread: bool = True, digits: int = 1) -> str:
    if ms is None:
        return "-"
    return f"{ms[0]:.{digits}f}" + (f" ±{ms[1]:.{digits}f}" if spread and len(ms) > 1 and ms[1] else "")


#: Metrics in percent, shown with one decimal as accuracy is: the ``segment`` task's.
SEG_METRICS = {
    "dice": "Dice per image",
    "iou": "IoU per image",
    "dice_pooled": "Dice pooled",
    "iou_pooled": "IoU pooled",
    "official_dice": "release's Dice",
    "official_iou": "release's IoU",
}


def _digits(metric: str) -> int:
    """Decimals of a table cell: 1 for accuracy and Dice / IoU in percent, 3 for other metrics (correlations,
    errors)."""
    return 1 if metric == "accuracy" or metric in SEG_METRICS else 3


def seg_lines(records: list[dict], labels: list[str], tasks: list[str]) -> list[str]:
    """The segmentation section of runs scored by Dice and IoU (task ``segment``): per method, Dice and IoU per image
    (averaged over the images) and pooled over the split's pixels, false positives counted, and the release's pair
    where the runs asked for it (``metric=official``); with one task a table of the metrics, with several a table per
    metric (tasks, and their mean per seed), each a mean over seeds ± spread."""
    recs = [r for r in records if r.get("test_dice") is not None and r.get("test_iou") is not None]
    if not recs:
        return []
    metrics = [m for m in SEG_METRICS if all(r.get(f"test_{m}") is not None for r in recs)]
    labels = [x for x in labels if any(r["label"] == x for r in recs)]
    tasks = [t for t in tasks if any(r["task"] == t for r in recs)]
    by_metric = {m: summarise(recs, labels, tasks, key=f"test_{m}") for m in metrics}
    lines = [
        "",
        "## Dice and IoU",
        "",
        "Test Dice and IoU (%) with false positives counted: per image (averaged over the test images; an image with "
        "nothing true and nothing predicted scores 100) and pooled (over every pixel of the test split); mean over "
        "seeds ± spread."
        + (
            " The release's pair (mmseg with ignore_index=0: false positives ignored, an all-foreground mask "
            "scores 100) is shown because the runs asked for it (task.metric=official)."
            if "official_dice" in metrics
            else ""
        ),
        "",
    ]
    if len(tasks) == 1:
        t = tasks[0]
        lines += [f"Task {t}:", "", "| method | " + " | ".join(SEG_METRICS[m] for m in metrics) + " |"]
        lines.append("|---|" + "---:|" * len(metrics))
        for label in labels:
            lines.append(
                f"| `{label}` | " + " | ".join(_cell(by_metric[m][label]["tasks"].get(t)) for m in metrics) + " |"
            )
        return lines
    for m in metrics:
        lines += [f"{SEG_METRICS[m]}:", "", "| method | " + " | ".join(tasks) + " | mean |"]
        lines.append("|---|" + "---:|" * (len(tasks) + 1))
        for label in labels:
            row = by_metric[m][label]
            cells = [_cell(row["tasks"].get(t)) for t in tasks] + [_cell(row["mean"])]
            lines.append(f"| `{label}` | " + " | ".join(cells) + " |")
        lines.append("")
    return lines[:-1]


def summary_table(summary: dict, tasks: list[str], spread: bool = True, metric: str = "accuracy") -> list[str]:
    groups = [g for g in GROUPS if any(VTAB_TASKS.get(t, (0, ""))[1] == g for t in tasks)]
    show_groups = len(groups) > 1
    all_groups = len(groups) == len(GROUPS)
    head = [
        "method",
        *tasks,
        *(g for g in groups if show_groups),
        "mean",
        *(["mean of groups"] if all_groups else []),
        "params (no head)",
        "train memory",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for label, row in summary.items():
        d = _digits(metric)
        cells = [f"`{label}`"] + [_cell(row["tasks"].get(t), spread, d) for t in tasks]
        if show_groups:
            cells += [_cell(row["groups"].get(g), spread, d) for g in groups]
        cells.append(f"**{_cell(row['mean'], spread, d)}**" if row["mean"] else "-")
        if all_groups:
            cells.append(_cell(row.get("mean_of_groups"), spread, d))
        cells.append(_fmt_params(row["params"]))
        cells.append(f"{row['memory'] / 2**20:.1f} MiB" if row["memory"] else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def dg_lines(records: list[dict], labels: list[str]) -> list[str]:
    """The domain-generalisation table of runs with target domains (``data.extra_tests``): per method the source's
    test accuracy, each target's headline accuracy and their mean over targets, each a mean over runs (seeds, list
    seeds) ± spread; then, for targets whose two class handlings differ, the same with every class scored."""
    recs = [r for r in records if r.get("tests")]
    if not recs:
        return []
    targets = list(dict.fromkeys(t for r in recs for t in r["tests"]))

    def table(key: str) -> list[str]:
        out = [
            "| method | source | " + " | ".join(targets) + " | targets mean |",
            "|---|" + "---:|" * (len(targets) + 2),
        ]
        for label in labels:
            runs = [r for r in recs if r["label"] == label]
            if not runs:
                continue
            cells = [_cell(_ms([r["test_acc"] for r in runs]))]
            for t in targets:
                vals = [r["tests"][t][key] for r in runs if t in r["tests"]]
                cells.append(_cell(_ms(vals)) if vals else "-")
            per_run = [sum(r["tests"][t][key] for t in targets if t in r["tests"]) / len(r["tests"]) for r in runs]
            cells.append(f"**{_cell(_ms(per_run))}**")
            out.append(f"| `{label}` | " + " | ".join(cells) + " |")
        return out

    lines = [
        "",
        "## Domain generalisation",
        "",
        "Test accuracy (%) on the source and on each target domain (its headline: classes present in the target, "
        "unless the run asked for all), mean over runs ± spread; the last column averages the targets per run.",
        "",
    ] + table("accuracy")
    if any(v["accuracy_all"] != v["accuracy_present"] for r in recs for v in r["tests"].values()):
        lines += ["", "Every class of the model scored (the argmax over all classes, as NOAH's and DTL's code):", ""]
        lines += table("accuracy_all")
    return lines


def replicate(record: dict) -> tuple:
    """What makes a run a repetition of another of its method and task: its training seed and, where the sweep
    repeats over few-shot list seeds (``list_seeds``), its list seed. Means and spreads are over these."""
    return record["seed"], record.get("list_seed")


def compare(records: list[dict], a: str, b: str, tasks: list[str]) -> dict:
    """B - A per task and on the suite mean, paired by seed."""
    acc = {(r["label"], r["task"], replicate(r)): r[metric_key(r, "test")] for r in records}
    seeds = sorted({replicate(r) for r in records}, key=str)
    out = {"a": a, "b": b, "tasks": {}, "mean": None}
    per_seed_mean = []
    for s in seeds:
        if all((x, t, s) in acc for x in (a, b) for t in tasks):
            per_seed_mean.append(mean(acc[(b, t, s)] - acc[(a, t, s)] for t in tasks))
    for t in tasks:
        d = [acc[(b, t, s)] - acc[(a, t, s)] for s in seeds if (a, t, s) in acc and (b, t, s) in acc]
        if d:
            out["tasks"][t] = _ms(d) + (len(d),)
    if per_seed_mean:
        out["mean"] = _ms(per_seed_mean) + (len(per_seed_mean),)
    return out


def _delta(d: tuple, digits: int) -> str:
    """A paired difference (mean, std, n): signed, with its spread only when there is more than one seed."""
    m = round(d[0], digits) + 0.0  # no "-0.0"
    return f"{m:+.{digits}f}" + (f" ±{d[1]:.{digits}f}" if d[2] > 1 else "")


def compare_lines(comparisons: list[dict], tasks: list[str], metric: str = "accuracy") -> list[str]:
    if not comparisons:
        return []
    head = ["B - A", *tasks, "mean", "B better on"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for c in comparisons:
        cells = [f"`{c['b']}` - `{c['a']}`"]
        for t in tasks:
            d = c["tasks"].get(t)
            cells.append(_delta(d, _digits(metric)) if d else "-")
        cells.append(f"**{_delta(c['mean'], _digits(metric) + 1)}**" if c["mean"] else "-")
        wins = sum(1 for d in c["tasks"].values() if d[0] > 0)
        cells.append(f"{wins}/{len(c['tasks'])} tasks")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    unit = "accuracy points" if metric == "accuracy" else metric
    lines.append(
        f"Differences in {unit}, B minus A, paired by seed: mean over seeds ± their standard "
        "deviation (no spread with one seed); the mean column is the difference of the suite means."
    )
    return lines


def plot(summary: dict, path: Path, x: str, title: str, metric: str = "accuracy") -> Optional[Path]:
    """Write :func:`figure`'s plot to ``path``; null (nothing written) where no label has a value to plot."""
    import matplotlib.pyplot as plt

    fig = figure(summary, x, title, metric)
    if fig is None:
        return None
    fig.savefig(path)
    plt.close(fig)
    return path


def _narrow(xs: list[float]) -> bool:
    """The x values span less than a decade (or are one value): a log axis would show one tick label or none."""
    lo, hi = min(xs), max(xs)
    return hi == lo or (lo > 0 and hi / lo < 10)


def figure(summary: dict, x: str, title: str, metric: str = "accuracy"):
    """The mean over tasks of each label against ``x`` (``params``: trainable parameters without the head;
    ``memory``: training memory in MiB), one point per label; null where no label has both. The x axis is
    logarithmic (symlog for parameters, from 0) where the values span a decade or more, else linear around them, so
    that its tick labels always show the data's range (an iDAT comparison's methods share one parameter count)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    pts = [
        (label, row[x] / (2**20 if x == "memory" else 1), row["mean"][0])
        for label, row in summary.items()
        if row["mean"] and row[x] is not None
    ]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=130)
    families = sorted({_family(p[0]) for p in pts})
    cmap = plt.get_cmap("tab10" if len(families) <= 10 else "tab20")
    colour = {f: cmap(i % cmap.N) for i, f in enumerate(families)}
    where = {label: (xv, yv) for label, xv, yv in pts}
    for label, xv, yv in pts:
        marker = "*" if "gist" in label else ("D" if "idat" in label else "o")
        ax.scatter(
            [xv],
            [yv],
            s=70 if marker != "*" else 150,
            color=colour[_family(label)],
            marker=marker,
            edgecolor="black",
            linewidth=0.5,
            zorder=3,
        )
        base = label[: -len("+gist")] if label.endswith("+gist") else None
        if base in where:  # an arrow from a method to the same method with GIST
            ax.annotate(
                "",
                xy=(xv, yv),
                xytext=where[base],
                zorder=2,
                arrowprops=dict(arrowstyle="->", color=colour[_family(label)], lw=0.8, alpha=0.6),
            )
    xs = [p[1] for p in pts]
    what = (
        "trainable parameters without the head"
        if x == "params"
        else "training memory, MiB (params + grads + optimizer state + saved activations)"
    )
    if _narrow(xs):
        lo, hi = min(xs), max(xs)
        pad = (hi - lo) * 0.12 if hi > lo else max(abs(lo) * 0.1, 1.0)
        ax.set_xlim(lo - pad, hi + pad)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=x == "params"))
        step = (hi - lo + 2 * pad) / 6
        digits = 0 if step >= 1 or x == "params" else min(3, max(1, -int(f"{step:e}".split("e")[1])))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.{digits}f}"))
        ax.set_xlabel(f"{what} (linear: the values span less than a decade)")
    else:
        if x == "params":
            ax.set_xscale("symlog", linthresh=100)
            ax.set_xlabel(f"{what} (symlog: 0 to 100 linear, log above)")
        else:
            ax.set_xscale("log")
            ax.set_xlabel(what)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 or v == 0 else f"{v:g}"))
        # Minor ticks labelled at 2x and 5x on the memory axis; none on the symlog parameter axis.
        ax.xaxis.set_minor_formatter(
            FuncFormatter(
                lambda v, _: "" if x == "params" or f"{v:.0e}"[0] not in "25" else (f"{v:,.0f}" if v >= 1 else f"{v:g}")
            )
        )
        ax.tick_params(axis="x", which="minor", labelsize=7)
    from matplotlib.lines import Line2D

    kinds = [("o", "method"), ("*", "with GIST (arrow: from the method alone)"), ("D", "iDAT")]
    handles = [
        Line2D(
            [],
            [],
            marker=m,
            linestyle="",
            color="grey",
            markeredgecolor="black",
            markersize=8 if m != "*" else 11,
            label=t,
        )
        for m, t in kinds
        if any((m == "*") == ("gist" in p[0]) and (m == "D") == ("idat" in p[0]) for p in pts)
    ]
    ax.legend(handles=handles, loc="upper left", fontsize=7, framealpha=0.8)
    ax.set_ylabel("mean test accuracy over tasks (%)" if metric == "accuracy" else f"mean test {metric} over tasks")
    ax.set_title("\n".join(textwrap.wrap(title, 100)), fontsize=10)  # a long title wraps instead of running off
    ax.grid(True, which="both", alpha=0.3)
    if not _narrow(xs):
        ax.margins(x=0.12, y=0.08)
    else:
        ax.margins(y=0.08)
    fig.tight_layout()
    _place_labels(ax, [(label, xv, yv) for label, xv, yv in pts])
    return fig


def _place_labels(ax, pts) -> None:
    """Label every point, moving a label to the first nearby spot that no earlier label covers."""
    fig = ax.figure
    fig.canvas.draw()
    placed: list[tuple[float, float, float, float]] = []
    offsets = [(6, 4), (6, -11), (-6, 4), (-6, -11), (6, 14), (6, -21), (-6, 14), (-6, -21), (6, 24), (6, -31)]
    for label, xv, yv in sorted(pts, key=lambda p: -p[2]):
        px, py = ax.transData.transform((xv, yv))
        w, h = 4.6 * len(label) * fig.dpi / 100, 9 * fig.dpi / 100
        for dx, dy in offsets:
            dx, dy = dx * fig.dpi / 100, dy * fig.dpi / 100
            x0 = px + dx if dx > 0 else px + dx - w
            box = (x0, py + dy, x0 + w, py + dy + h)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(
            label,
            (xv, yv),
            textcoords="offset pixels",
            xytext=(dx, dy),
            fontsize=7,
            ha="left" if dx > 0 else "right",
            va="bottom",
        )


def _family(label: str) -> str:
    base = label.split("+")[0].split(":")[0].split(" ")[0]
    return {
        "idat-s-mse": "idat",
        "idat-s-kl": "idat",
        "idat-p-mse": "idat",
        "idat-p-kl": "idat",
        "idat-ps-mse": "idat",
        "idat-ps-kl": "idat",
    }.get(base, base)


def write_report(
    root: str | Path | list,
    out: str | Path | None = None,
    pairs: Optional[list[tuple[str, str]]] = None,
    title: Optional[str] = None,
    tune_on: Optional[str] = None,
) -> dict:
    """Write the tables and plots for the runs under ``root`` into ``out`` (default ``root/report``).

    ``root`` may be a list: the runs of several sweeps (or run folders) in one report, e.g. a sweep and a grid
    around it. ``tune_on="val"``: a method run at several grid points (in one sweep or across them) is reported
    once, at the point with the best validation accuracy for each task and seed (see ``tune``); ``results.csv`` /
    ``results.jsonl`` still hold every run.
    """
    roots = list(dict.fromkeys(Path(r).resolve() for r in (root if isinstance(root, (list, tuple)) else [root])))
    root = roots[0]
    all_records = [r for x in roots for r in collect(x)]
    if not all_records:
        raise ConfigError(f"no finished runs (result.json) under {', '.join(map(str, roots))}")
    if tune_on not in (None, "val"):
        raise ConfigError(f"tune_on must be 'val' or None, got {tune_on!r}")
    if tune_on:
        untuned = [r["run_dir"] for r in all_records if r.get(metric_key(r, tune_on)) is None]
        if untuned:
            shown = ", ".join(untuned[:5]) + (f" and {len(untuned) - 5} more" if len(untuned) > 5 else "")
            raise ConfigError(
                f"cannot choose on validation (--tune val): {len(untuned)} of the {len(all_records)} "
                f"runs have no validation score (trained without select=val): {shown}; train them with --select val "
                "(train.select=val), or report without --tune"
            )
    records, chosen = tune(all_records) if tune_on else (all_records, {})
    labels, tasks, exp_pairs = _order(roots, records)
    for a, b in pairs or []:
        for x in (a, b):
            if x not in labels:
                raise ConfigError(f"cannot compare {x!r}: no such method label in {root} (labels: {', '.join(labels)})")
    # A report rebuilt from its results.jsonl goes back into that report's folder.
    out = Path(out) if out else (root.parent if root.is_file() else root / "report")
    out.mkdir(parents=True, exist_ok=True)
    pairs = list(pairs or []) + [p for p in exp_pairs if p not in (pairs or [])]
    summary = summarise(records, labels, tasks)
    metric = _metric_of(records)
    selects = sorted({str(r["select"]) for r in records})
    backbones = sorted({r["backbone"] for r in records})
    seeds = sorted({r["seed"] for r in records})
    list_seeds = sorted({r["list_seed"] for r in records if r.get("list_seed") is not None})
    batch = sorted({r["memory_batch"] for r in records if r["memory_batch"]})
    dtypes = sorted({r["memory_dtype"] for r in records if r.get("memory_dtype")}) or ["dtype not recorded"]
    devices = sorted({r["memory_device"] for r in records if r.get("memory_device")}) or ["device not recorded"]
    how = f"{' / '.join(dtypes)}, {' / '.join(devices)}"
    base = root.parent if root.is_file() else root
    title = title or (base.resolve().name if base.name != "runs" else base.resolve().parent.name)
    failures = [f for x in roots for f in _failures(x)]
    # Everything the report needs, so it can be rebuilt from the report folder alone (vpeft report OUT/results.jsonl).
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in all_records))
    (out / "failures.json").write_text(json.dumps(failures, indent=1) + "\n")
    exp_meta = base / "experiment.yaml"
    if exp_meta.is_file() and exp_meta.resolve() != (out / "experiment.yaml").resolve():
        (out / "experiment.yaml").write_text(exp_meta.read_text())

    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in all_records for k in r)))
        w.writeheader()
        w.writerows(all_records)
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "label",
                *[f"{t}_mean" for t in tasks],
                *[f"{t}_std" for t in tasks],
                "mean",
                "mean_std",
                "seeds_complete",
                "trainable_params_no_head",
                "train_memory_bytes",
                "train_seconds",
            ]
        )
        for label, row in summary.items():
            w.writerow(
                [
                    label,
                    *[row["tasks"].get(t, (None,))[0] for t in tasks],
                    *[row["tasks"].get(t, (None, None))[1] for t in tasks],
                    row["mean"][0] if row["mean"] else None,
                    row["mean"][1] if row["mean"] else None,
                    row["mean"][2] if row["mean"] else 0,
                    row["params"],
                    row["memory"],
                    row["seconds"],
                ]
            )
    comparisons = [compare(records, a, b, tasks) for a, b in pairs]
    lines = [
        f"# {title}",
        "",
        f"{len(records)} finished runs; {len(labels)} methods x {len(tasks)} tasks; seeds {seeds}"
        + (f", list seeds {list_seeds}" if list_seeds else "")
        + "; "
        f"backbone {', '.join(f'`{b}`' for b in backbones)}; model selection {', '.join(selects)}; training "
        f"memory measured at batch {', '.join(map(str, batch))}, {how}.",
        "",
        f"{'Test accuracy (%)' if metric == 'accuracy' else f'Test {_metric_title(metric)}'}, mean over seeds ± spread "
        "(population standard deviation over seeds). The mean column averages the tasks per seed, then over "
        "seeds.",
        "",
    ]
    if list_seeds:  # few-shot lists drawn with several seeds: each (seed, list seed) is a repetition
        lines[4] = lines[4].replace("seeds", "seeds and list seeds").replace("per seed", "per (seed, list seed)")
    if tune_on:
        lines[2] += (
            f" Grid points chosen per task and seed on validation {metric} ({len(all_records)} runs in "
            "all); parameters and memory are the means over the chosen runs."
        )
    lines += summary_table(summary, tasks, metric=metric)
    seen: dict[tuple, int] = defaultdict(int)
    for r in records:
        seen[(r["label"], r["task"], replicate(r))] += 1
    repeated = sorted((k for k, n in seen.items() if n > 1), key=str)
    if repeated:  # e.g. plain `vpeft train` runs of one method at two settings: they would pass for extra seeds
        label, task, (seed, list_seed) = repeated[0]
        seed = f"{seed}, list seed {list_seed}" if list_seed is not None else seed
        lines += [
            "",
            f"**Note:** {len(repeated)} method/task/seed combinations have more than one run (first: "
            f"`{label}`, {task}, seed {seed}); the table averages them. Give the settings their own labels, or "
            "pick one with `--tune val`.",
        ]
    if chosen:
        lines += [
            "",
            "## Chosen on validation",
            "",
            "| method | grid point: times chosen (of tasks x seeds) |",
            "|---|---|",
        ]
        lines += [
            f"| `{label}` | " + ", ".join(f"{g}: {n}" for g, n in sorted(c.items(), key=lambda x: -x[1])) + " |"
            for label, c in sorted(chosen.items(), key=lambda kv: labels.index(kv[0]))
        ]
    if failures:
        lines += ["", f"## Failed runs ({len(failures)})", ""]
        lines += [f"- `{f['run']}`: {f['error'].splitlines()[0][:300]}" for f in failures]
    lines += dg_lines(records, labels)
    lines += seg_lines(records, labels, tasks)
    if comparisons:
        lines += ["", "## Comparisons", ""] + compare_lines(comparisons, tasks, metric)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    if comparisons:
        (out / "compare.md").write_text("\n".join(compare_lines(comparisons, tasks, metric)) + "\n")
    plots = [
        plot(summary, out / "acc_vs_params.png", "params", f"{title}: {metric} vs trainable parameters", metric),
        plot(summary, out / "acc_vs_memory.png", "memory", f"{title}: {metric} vs training memory", metric),
    ]
    return {
        "out": str(out),
        "records": len(records),
        "labels": labels,
        "tasks": tasks,
        "summary": summary,
        "comparisons": comparisons,
        "failures": failures,
        "chosen": chosen,
        "plots": [str(p) for p in plots if p],
        "markdown": lines,
    }
