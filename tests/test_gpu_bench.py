"""benchmarks/gpu.py end to end on the CPU (``--smoke``: the tiny ViT, tiny data), and the metadata it records."""

import json

import torch
from conftest import benchmark_script


def _module(name: str):
    return benchmark_script(name)


def test_gpu_benchmark_smoke_runs_every_part(tmp_path):
    gpu = _module("gpu")
    assert gpu.main(["--smoke", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "gpu.json").read_text())
    md = (tmp_path / "gpu.md").read_text()
    meta, parts = data["meta"], data["parts"]
    assert (meta["device"], meta["dtype"], meta["batch_size"]) == ("cpu", "bfloat16", 8)
    assert meta["torch"] == torch.__version__
    failed = {k: v.get("error") for k, v in parts.items() if v["status"] != "ok" and k != "nccl"}
    assert not failed, failed
    if not torch.cuda.is_available():
        assert parts["nccl"] == {"status": "skipped", "reason": "no CUDA", "seconds": parts["nccl"]["seconds"]}
    rows = parts["methods"]["rows"]
    assert list(rows) == [label for label, *_ in gpu.ROWS]
    assert rows["full"]["ratio_to_full"] == 1.0
    for label, r in rows.items():
        assert r["status"] == "ok", (label, r)
        assert r["train_images_per_second"] > 0 and 0 < r["ratio_to_full"] <= 1.0, (label, r)
        assert sorted(int(b) for b in r["inference"]) == [1, 4, 16]
        assert r["autocast_weight_bytes"] is not None
    assert rows["gps (k=1)"]["selector"] == "gps" and rows["idat (adapter:dim=4)"]["objective"].startswith("idat")
    data_rows = parts["data_path"]["rows"]
    assert [(r["format"], r["method"]) for r in data_rows] == [("vtab1k", "linear"), ("fgvc", "linear")]
    assert all(r["trainer_images_per_second"] > 0 and r["lean_images_per_second"] > 0 for r in data_rows)
    assert len(parts["fp16_scaler"]["loss"]) == 1 and parts["gps"]["selection"]["selected"] > 0
    assert [r["variant"] for r in parts["lora_peft"]["rows"]] == ["vpeft q,v", "vpeft qkv", "peft qkv"]
    if parts["sam"]["status"] == "ok":  # with the sam extra: every Table 5 method timed on the tiny SAM
        assert parts["sam"]["backbone"] == "sam:tiny" and list(parts["sam"]["rows"]) == list(gpu.SAM_ROWS)
        assert all(r["step_seconds"] > 0 for r in parts["sam"]["rows"].values()) and "## SAM (sam:tiny)" in md
    if parts["text"]["status"] == "ok":  # with the text extra: Table 3's methods on the tiny T5 and BERT
        text = parts["text"]["rows"]
        assert list(text) == [label for label, *_ in gpu.TEXT_ROWS] and "## Text (t5:tiny" in md
        assert all(r["status"] == "ok" and r["step_seconds"] > 0 for r in text.values()), text
        assert text["t5 adapter+gist"]["trainable"] == text["t5 adapter (ATTEMPT)"]["trainable"] + 32  # one token
    assert (
        "## Methods" in md
        and "## Data path" in md
        and "## LoRA against HF PEFT" in md
        and "| dtl_plus |" in md
        and "nccl: skipped" in md
    )


def test_gpu_benchmark_smoke_needs_an_out_folder(capsys):
    import pytest

    with pytest.raises(SystemExit):
        _module("gpu").main(["--smoke"])
    assert "--out" in capsys.readouterr().err


def test_run_meta_names_the_device_and_dtype(monkeypatch):
    common = _module("_common")
    assert (common.run_meta("x.py", [])["device"], common.run_meta("x.py", [])["dtype"]) == ("cpu", "float32")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    meta = common.run_meta("x.py", [], dtype=torch.bfloat16, device="cuda", batch_size=32)
    assert (meta["device"], meta["dtype"], meta["batch_size"]) == ("cuda: NVIDIA H200", "bfloat16", 32)


def test_collectives_check_on_a_one_process_gloo_group():
    # The nccl part's check, on the CPU: Dist's collectives enabled by force over a real one-process group.
    r = _module("gpu").collectives(torch.device("cpu"), "gloo")
    assert r["backend"] == "gloo" and r["world_size"] == 1
    assert {"barrier", "sum_floats", "sum_grads_", "broadcast_"} <= set(r["checks"])
    assert not torch.distributed.is_initialized()
