"""Reports (#21): runs outside a sweep are labelled by method, objective and selector (GPS runs are not `linear`),
`--tune val` refuses runs without a validation score, naming them, and the plots' x axes show the data's range (a
narrow range gets a linear axis with tick labels; one shared parameter count is not a lost axis)."""

import json

import pytest
import yaml

from vpeft.bench.report import collect, figure, write_report
from vpeft.cli import main
from vpeft.errors import ConfigError


def _run(
    root,
    name,
    method="linear",
    objective="ce",
    selector=None,
    label=None,
    val=None,
    seed=0,
    params=1000,
    memory=10 * 2**20,
    test=50.0,
):
    """A finished run folder as `vpeft train` leaves it (the fields a report reads), with ``bench.json`` when it
    has a sweep ``label``."""
    d = root / name
    d.mkdir(parents=True)
    result = {
        "method": method,
        "objective": objective,
        "task": "t",
        "seed": seed,
        "backbone": "b",
        "test_acc": test,
        "val_acc": val,
        "selected_epoch": 1,
        "protocol": {"select": "val" if val else "last"},
        "trainable_params_no_head": params,
        "trainable_params": params + 10,
        "memory": {"train_memory_bytes": memory, "batch_size": 8, "dtype": "float32", "device": "cpu"},
        "train_seconds": 1.0,
    }
    if selector:
        result["selection"] = {"selected": 5, "criterion": "grad"}
    (d / "result.json").write_text(json.dumps(result))
    (d / "config.yaml").write_text(yaml.safe_dump({"method": {"name": method}, "selector": selector}))
    if label:
        (d / "bench.json").write_text(json.dumps({"label": label, "task": "t"}))
    return d


def test_runs_are_labelled_by_method_objective_and_selector(tmp_path):
    _run(tmp_path, "a", selector={"name": "gps", "k": 1})
    _run(tmp_path, "b")
    _run(tmp_path, "c", method="lora", objective="gist")
    _run(tmp_path, "d", selector="gps:k=2", label="my gps")  # a sweep's entry label is kept as it is
    labels = {r["run_dir"]: r["label"] for r in collect(tmp_path)}
    assert labels == {"a": "linear+gps", "b": "linear", "c": "lora+gist", "d": "my gps"}


def test_tune_val_refuses_runs_without_a_validation_score_naming_them(tmp_path, capsys):
    for i in range(7):
        _run(tmp_path / "sw", f"r{i}", seed=i, val=None if i % 2 == 0 else 40.0)
    with pytest.raises(
        ConfigError,
        match=r"cannot choose on validation \(--tune val\): 4 of the 7 runs have no "
        r"validation score .*: r0, r2, r4, r6; train them with --select val",
    ):
        write_report(tmp_path / "sw", tmp_path / "out", tune_on="val")
    assert main(["report", str(tmp_path / "sw"), "--out", str(tmp_path / "out"), "--tune", "val"]) == 2
    assert "r0, r2, r4, r6" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "sw"), "--out", str(tmp_path / "out")]) == 0  # untuned: reported


def _summary(points):
    """A report summary (as `summarise` gives) of labels -> (params, memory MiB, mean accuracy)."""
    return {label: {"params": p, "memory": m * 2**20, "mean": (acc, 0.0, 1)} for label, (p, m, acc) in points.items()}


def _visible_ticks(ax):
    lo, hi = ax.get_xlim()
    ax.figure.canvas.draw()
    return [
        (t.get_position()[0], t.get_text())
        for t in ax.get_xticklabels(which="both")
        if t.get_text() and lo <= t.get_position()[0] <= hi
    ]


@pytest.mark.parametrize("x", ["params", "memory"])
def test_plot_axes_show_the_data(x):
    import matplotlib.pyplot as plt

    # iDAT's comparison: every method has the same parameter count; memory between 30 and 51 MiB (under a decade)
    narrow = _summary(
        {
            "S (adapter)": (10384, 34.0, 37.0),
            "idat-s-mse": (10384, 48.5, 37.5),
            "P (adaptformer)": (10384, 32.0, 36.2),
            "idat-p-kl": (10384, 45.5, 36.2),
            "idat-ps-kl": (10384, 48.7, 36.9),
            "tiny": (10384, 30.4, 35.0),
        }
    )
    fig = figure(narrow, x, "narrow")
    ax = fig.axes[0]
    xs = [row[x] / (2**20 if x == "memory" else 1) for row in narrow.values()]
    lo, hi = ax.get_xlim()
    assert ax.get_xscale() == "linear" and lo < min(xs) <= max(xs) < hi
    ticks = _visible_ticks(ax)
    assert len(ticks) >= 3 and len({t for _, t in ticks}) == len(ticks)  # several distinct labels
    if x == "params":
        assert hi - lo < 0.5 * 10384  # around the one value, not a decade-wide axis with the points in a corner
    plt.close(fig)
    # a very narrow memory range still gets distinct labels
    fig = figure(_summary({"a": (10, 2.90, 1.0), "b": (20, 3.05, 2.0)}), "memory", "tiny range")
    ticks = _visible_ticks(fig.axes[0])
    assert len(ticks) >= 3 and len({t for _, t in ticks}) == len(ticks)
    plt.close(fig)
    # a wide range keeps its log axis (symlog for parameters, from 0), with labels
    wide = _summary({"linear": (0, 2.9, 35.5), "full": (691_500, 30.6, 36.4), "bitfit": (6_500, 15.6, 35.9)})
    fig = figure(wide, x, "wide")
    ax = fig.axes[0]
    assert ax.get_xscale() == ("symlog" if x == "params" else "log")
    assert len(_visible_ticks(ax)) >= 2
    plt.close(fig)


def test_correlations_are_reported_in_percent_beside_accuracies(tmp_path):
    """Table 3's mean averages accuracies with STS-B's Pearson x 100: reports show pearson and spearman x 100
    (result.json keeps the fractions)."""
    _run(tmp_path / "sw", "rte", label="adapter", test=60.0)
    d = _run(tmp_path / "sw", "stsb", label="adapter", test=0.0)
    r = json.loads((d / "result.json").read_text())
    r.update(
        task="s",
        primary_metric="pearson",
        metrics={"pearson": 0.8, "spearman": 0.75, "mae": 0.5, "mse": 0.4},
        val_metrics={"pearson": 0.7, "spearman": 0.6, "mae": 0.6, "mse": 0.5},
    )
    (d / "result.json").write_text(json.dumps(r))
    (d / "bench.json").write_text(json.dumps({"label": "adapter", "task": "s"}))
    stsb = next(x for x in collect(tmp_path / "sw") if x["run_dir"] == "stsb")
    assert stsb["test_pearson"] == pytest.approx(80.0) and stsb["val_spearman"] == pytest.approx(60.0)
    assert stsb["test_mae"] == 0.5  # errors keep their units
    summary = write_report(tmp_path / "sw", tmp_path / "out")["markdown"]
    text = "\n".join(summary)
    assert "pearson (x 100)" in text and "**70.000**" in text  # the mean of 60 and 80
