import json
import subprocess
import sys

import pytest
from conftest import TINY

from vpeft.cli import main
from vpeft.registry import METHODS, OBJECTIVES


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "train", "eval", "measure", "list", "data"):
        assert cmd in out


@pytest.mark.parametrize("kind,registry", [("methods", METHODS), ("objectives", OBJECTIVES)])
def test_list_prints_every_registered_name_with_options(capsys, kind, registry):
    assert main(["list", kind]) == 0
    out = capsys.readouterr().out
    for name in registry.names():
        assert f"{name}:" in out
        for f in registry.get(name).fields():
            assert f"    {f.name} = " in out


def test_list_selectors_when_empty(capsys):
    assert main(["list", "selectors"]) == 0
    assert capsys.readouterr().out.strip()


def test_measure_json(capsys):
    assert (
        main(
            [
                "measure",
                "--backbone",
                TINY,
                "--method",
                "linear",
                "--method",
                "bitfit",
                "--batch-size",
                "2",
                "--num-classes",
                "3",
                "--json",
                "--no-timing",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == ["linear", "bitfit"]
    assert all(
        set(r)
        == {
            "method",
            "objective",
            "trainable",
            "trainable_no_head",
            "total",
            "saved_activation_bytes",
            "param_bytes",
            "grad_bytes",
            "optimizer_state_bytes",
            "train_memory_bytes",
            "step_seconds",
        }
        for r in rows
    )


def test_errors_are_one_line_with_exit_code_2(capsys, small_task, tmp_path):
    code = main(
        ["train", "--data", str(small_task), "--backbone", TINY, "--method", "lora_typo", "--out", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vpeft: error: unknown method 'lora_typo'") and "Traceback" not in err
    code = main(["train", "--data", str(tmp_path / "nowhere"), "--backbone", TINY, "--out", str(tmp_path / "r")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    assert main(["eval", "--run", str(tmp_path / "nowhere")]) == 2
    assert "run directory" in capsys.readouterr().err


def test_train_from_yaml_with_overrides_then_eval(small_task, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"backbone: {{spec: '{TINY}'}}\nmethod: {{name: linear}}\ndata: {{root: '{small_task}'}}\n"
        "train: {epochs: 1, batch_size: 8}\n"
    )
    out = tmp_path / "run"
    assert (
        main(["train", "--config", str(cfg), "method.name=bitfit", "train.lr=0.01", "--out", str(out), "--no-progress"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "test acc:" in printed and "trainable:" in printed and "train mem:" in printed
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["method"]["name"] == "bitfit" and saved["train"]["lr"] == 0.01
    assert main(["eval", "--run", str(out)]) == 0
    assert "(same)" in capsys.readouterr().out


def test_yaml_sections_in_short_or_empty_form_take_command_line_values(small_task, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"backbone: '{TINY}'\nmethod: bitfit\ndata:\n  # root: somewhere\ntrain: {{epochs: 1, batch_size: 8}}\n"
    )
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                str(cfg),
                "--data",
                str(small_task),
                "--checkpoint",
                str(tmp_path / "w.pth"),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "w.pth" in capsys.readouterr().err  # got as far as loading the checkpoint: both sections took the values
    (tmp_path / "bad.yaml").write_text("data: [1, 2]\n")
    assert main(["train", "--config", str(tmp_path / "bad.yaml"), "--data", str(small_task), "--out", str(out)]) == 2
    assert "section 'data' must be a mapping" in capsys.readouterr().err


def test_list_presets_prints_pastable_specs(capsys):
    assert main(["list", "presets"]) == 0
    out = capsys.readouterr().out
    assert "--objective idat:" in out and "{" not in out


def test_data_synth_is_deterministic(tmp_path):
    from vpeft.data.synth import TASKS

    for d in ("a", "b"):
        assert main(["data", "synth", "--out", str(tmp_path / d), "--seed", "5", "--n-test", "50"]) == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == len(TASKS) * (800 + 200 + 50 + 5)
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)
    main(["data", "synth", "--out", str(tmp_path / "c"), "--seed", "6", "--n-test", "50", "--tasks", "count"])
    assert (tmp_path / "c/count/images/test/000000.png").read_bytes() != (
        tmp_path / "a/count/images/test/000000.png"
    ).read_bytes()


def test_module_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "vpeft", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("vpeft ")


@pytest.mark.parametrize("method", ["lora:rank=2", "ssf", "vpt_shallow:length=2"])
def test_merge_command(small_task, tmp_path, capsys, method):
    import torch

    from vpeft import load_merged
    from vpeft.data.vtab import load_split, normalize
    from vpeft.run import load_run

    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(small_task),
                "--backbone",
                TINY,
                "--method",
                method,
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--pool",
                "avg",
                "--out",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    out = tmp_path / "merged.safetensors"
    code = main(["merge", "--run", str(run), "--out", str(out)])
    if method.startswith("vpt"):
        assert code == 2 and "cannot be merged" in capsys.readouterr().err and not out.exists()
        return
    assert code == 0
    model, objective, _, _ = load_run(run)
    x = normalize(load_split(small_task, "test", (32, 32)).images[:4], "inception")
    with torch.no_grad():
        torch.testing.assert_close(load_merged(out)(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["formats", "families"])
def test_list_shows_every_registered_format_and_family(kind, capsys):
    from vpeft import FAMILIES, FORMATS

    assert main(["list", kind]) == 0
    out = capsys.readouterr().out
    registry = FORMATS if kind == "formats" else FAMILIES
    assert registry.names() and all(out.count(f"{n}: ") >= 1 for n in registry.names())
    if kind == "formats":
        assert "train800val200, train800, val200, test" in out  # vtab1k's default splits
