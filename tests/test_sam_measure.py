"""``vpeft measure`` on SAM (issue 18): a ``sam`` backbone is measured as a segmentation model (task ``segment``, one
mask's logits, the task's loss on random 0/1 masks), on the CPU or on the meta device, where the bytes are counted
from shapes alone and must equal the CPU's. On sam:tiny (fast)."""

import json

import pytest

pytest.importorskip("segment_anything", reason="the SAM family needs the sam extra: pip install 'vpeft[sam]'")

from vpeft.cli import main  # noqa: E402
from vpeft.config import RunConfig  # noqa: E402
from vpeft.measure import MEASURE_KEYS, default_task, measure  # noqa: E402
from vpeft.run import build_model  # noqa: E402

GPS = "gps:loss=task,norm_bias=outside_blocks"
MEMORY_KEYS = ("saved_activation_bytes", "param_bytes", "grad_bytes", "optimizer_state_bytes", "train_memory_bytes")


def _head_params() -> int:
    cfg = RunConfig.from_dict(
        {"backbone": {"spec": "sam:tiny"}, "method": "linear", "task": "segment", "data": {"format": "segfolder"}}
    )
    model, _ = build_model(cfg, 1)
    return sum(p.numel() for p in model.head.parameters())


def test_a_sam_backbone_is_measured_as_a_segmentation_model():
    assert default_task("sam:tiny") == "segment" and default_task("vit_tiny_patch16_224") == "classify"
    r = measure("sam:tiny", "linear", batch_size=2, timing=False)
    assert set(r) == set(MEASURE_KEYS) | {"method", "objective", "task", "input_size"}
    assert (r["task"], r["objective"]) == ("segment", "seg")  # the loss at its default, bce_iou
    assert r["input_size"] == [64, 64]
    # decoder-only: the mask decoder and no_mask_embed train, nothing of the encoder
    assert r["trainable"] == _head_params() and r["trainable_no_head"] == 0
    assert r["train_memory_bytes"] == sum(r[k] for k in MEMORY_KEYS[:4])
    assert r["param_bytes"] == 4 * r["total"] and r["grad_bytes"] == 4 * r["trainable"]


def test_the_task_and_its_loss_can_be_named():
    r = measure("sam:tiny", "linear", batch_size=1, timing=False, task="segment:loss=bce_dice")
    assert r["objective"] == "seg:loss=bce_dice"


@pytest.mark.parametrize("method,selector", [("linear", None), ("full", None), ("lora", None), ("linear", GPS)])
def test_the_meta_device_counts_the_cpu_steps_bytes(method, selector):
    cpu = measure("sam:tiny", method, selector=selector, batch_size=2, timing=False)
    meta = measure("sam:tiny", method, selector=selector, batch_size=2, device="meta")
    assert {k: meta[k] for k in MEMORY_KEYS} == {k: cpu[k] for k in MEMORY_KEYS}
    assert meta["trainable"] == cpu["trainable"] and meta["total"] == cpu["total"]
    assert meta["structure_only"] is True and meta["step_seconds"] is None and "structure_only" not in cpu


def test_activations_order_by_method_and_grow_with_the_batch():
    act = {m: measure("sam:tiny", m, batch_size=2, device="meta")["saved_activation_bytes"] for m in ("linear", "full")}
    assert 0 < act["linear"] < act["full"]
    full4 = measure("sam:tiny", "full", batch_size=4, device="meta")["saved_activation_bytes"]
    assert abs(full4 - 2 * act["full"]) < 0.01 * full4


def test_a_cpu_step_is_timed():
    r = measure("sam:tiny", "linear", batch_size=1, warmup=0, repeats=1)
    assert r["step_seconds"] > 0


def test_the_meta_device_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="meta"):
        measure("sam:tiny", "linear", device="meta", amp="bf16")
    with pytest.raises(ValueError, match="meta"):
        measure("sam:tiny", "linear", device="meta", inference=True)


def test_cli_measures_sam_on_meta(capsys):
    argv = ["measure", "--backbone", "sam:tiny", "--method", "linear", "--selector", GPS, "--device", "meta"]
    assert main([*argv, "--batch-size", "1", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["objective"] == "seg" and row["selector"].startswith("gps")
    assert row["trainable"] > _head_params() and row["step_seconds"] is None
