import pytest
import torch
from conftest import TINY

from vpeft.measure import AMP_KEYS, MEASURE_KEYS, SavedTensorProbe, measure


def test_probe_counts_storages_once_and_skips_parameters():
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8, requires_grad=True)
    with SavedTensorProbe(lin) as probe:
        h = lin(x)  # saves x (for the weight grad) and a view of the weight (excluded)
        y = h.relu()  # saves its output (4 x 8)
        z = y[:2] * y[2:]  # saves two views of the same storage: counted once
        z.sum().backward()
    assert probe.bytes == 4 * 8 * 4 * 2  # x and relu's output; y's views share that storage


def test_linear_probe_keeps_only_the_head_input():
    # With a frozen backbone, autograd saves only the head's input: the class token row, a view into the
    # final-norm output [B, 1 + 16 patches, 32], whose whole storage stays alive; plus CE's small tensors.
    r = measure(TINY, "linear", batch_size=2, num_classes=5, timing=False)
    norm_out = 2 * 17 * 32 * 4
    assert norm_out <= r["saved_activation_bytes"] < norm_out + 200


@pytest.mark.parametrize("method", ["linear", "bitfit", "full"])
def test_measure_keys_and_sums(method):
    r = measure(TINY, method, batch_size=2, num_classes=5, timing=True)
    assert set(r) == set(MEASURE_KEYS) | {"method", "objective"}
    assert r["train_memory_bytes"] == sum(
        r[k] for k in ("saved_activation_bytes", "param_bytes", "grad_bytes", "optimizer_state_bytes")
    )
    assert r["step_seconds"] > 0 and r["param_bytes"] == 4 * r["total"]
    # AdamW: two moments per trainable value plus one scalar step per tensor
    assert 8 * r["trainable"] <= r["optimizer_state_bytes"] <= 8 * r["trainable"] + 4 * 100


def test_activation_order_and_linearity_in_batch():
    rows = {
        m: measure(TINY, m, batch_size=4, timing=False)["saved_activation_bytes"] for m in ("linear", "bitfit", "full")
    }
    assert rows["linear"] < rows["bitfit"] < rows["full"]
    full8 = measure(TINY, "full", batch_size=8, timing=False)["saved_activation_bytes"]
    assert abs(full8 - 2 * rows["full"]) < 0.01 * full8


@pytest.mark.parametrize(
    "method,saved,total",
    [("linear", 4412, 135956), ("bitfit", 122284, 263100), ("full", 174508, 692860), ("adapter", 64252, 205172)],
)
def test_fp32_figures_are_unchanged(method, saved, total):
    # Golden values of the measure before autocast support: without AMP the result is the same, key for key.
    r = measure(TINY, method, batch_size=2, num_classes=5, timing=False)
    assert (r["saved_activation_bytes"], r["train_memory_bytes"]) == (saved, total)
    assert "autocast_weight_bytes" not in r and "dtype" not in r


def test_probe_tells_autocast_weight_copies_from_activations():
    lin = torch.nn.Linear(8, 8).requires_grad_(False)
    x = torch.randn(8, 8, requires_grad=True)
    with SavedTensorProbe(lin) as probe, torch.autocast("cpu", dtype=torch.bfloat16):
        y = lin(x)  # frozen weight: saves only autocast's bf16 copy of it (for x's gradient)
        z = y * y  # saves y: bf16, the weight's size, other values: an activation
    assert y.dtype == torch.bfloat16
    assert probe.weight_copy_bytes == 8 * 8 * 2 and probe.activation_bytes == 8 * 8 * 2
    assert probe.bytes == probe.weight_copy_bytes + probe.activation_bytes
    z.sum().backward()


@pytest.mark.parametrize("method", ["linear", "lora", "full"])
def test_bf16_activations_scale_with_batch_and_weight_copies_do_not(method):
    r2, r4 = (measure(TINY, method, batch_size=b, num_classes=5, timing=False, amp="bf16") for b in (2, 4))
    assert set(r2) == set(MEASURE_KEYS) | set(AMP_KEYS) | {"method", "objective"}
    assert r2["dtype"] == "bfloat16"
    assert abs(r4["saved_activation_bytes"] / r2["saved_activation_bytes"] - 2) < 0.03
    assert r4["autocast_weight_bytes"] == r2["autocast_weight_bytes"]
    if method != "linear":  # a linear probe's frozen trunk saves nothing; its head's input is all it keeps
        assert r2["autocast_weight_bytes"] > 0
        # counted as activations (what the probe did before), the weight copies would break the proportion
        both = [r["saved_activation_bytes"] + r["autocast_weight_bytes"] for r in (r2, r4)]
        assert both[1] / both[0] < 1.9
    assert r2["train_memory_bytes"] == sum(
        r2[k]
        for k in (
            "saved_activation_bytes",
            "autocast_weight_bytes",
            "param_bytes",
            "grad_bytes",
            "optimizer_state_bytes",
        )
    )


def _count_vit_forwards(monkeypatch):
    """Record (training, grad enabled, under bf16 autocast, batch) of every forward of a timm VisionTransformer."""
    from timm.models.vision_transformer import VisionTransformer

    calls = []
    orig = VisionTransformer.forward

    def forward(self, x):
        out = orig(self, x)  # fp32 input: the logits are bf16 only under autocast
        calls.append((self.training, torch.is_grad_enabled(), out.dtype == torch.bfloat16, len(x)))
        return out

    monkeypatch.setattr(VisionTransformer, "forward", forward)
    return calls


def test_timing_runs_warmup_then_timed_steps(monkeypatch):
    calls = _count_vit_forwards(monkeypatch)
    r = measure(TINY, "lora", batch_size=2, num_classes=5, warmup=2, repeats=3)
    assert r["step_seconds"] > 0 and "inference" not in r
    assert calls == [(True, True, False, 2)] * (1 + 2 + 3)  # measured step, warm-up, timed steps


def test_inference_is_eval_mode_no_grad_under_the_same_autocast(monkeypatch):
    calls = _count_vit_forwards(monkeypatch)
    r = measure(
        TINY,
        "lora",
        batch_size=2,
        num_classes=5,
        timing=False,
        amp="bf16",
        warmup=1,
        repeats=2,
        inference=True,
        inference_batch_sizes=(1, 3),
    )
    assert calls[0] == (True, True, True, 2)
    assert calls[1:] == [(False, False, True, 1)] * 3 + [(False, False, True, 3)] * 3
    assert [i["batch_size"] for i in r["inference"]] == [1, 3]
    for i in r["inference"]:
        assert i["latency_seconds"] > 0
        assert i["images_per_second"] == pytest.approx(i["batch_size"] / i["latency_seconds"])


def test_measure_rejects_an_unknown_amp():
    with pytest.raises(ValueError, match="amp"):
        measure(TINY, "linear", amp="fp8", timing=False)


def test_cli_measure_amp_and_inference(capsys):
    import json

    from vpeft.cli import main

    assert (
        main(
            [
                "measure",
                "--backbone",
                TINY,
                "--method",
                "lora",
                "--batch-size",
                "2",
                "--num-classes",
                "3",
                "--amp",
                "bf16",
                "--inference",
                "--inference-batch-sizes",
                "1",
                "2",
                "--repeats",
                "1",
                "--json",
            ]
        )
        == 0
    )
    (row,) = json.loads(capsys.readouterr().out)
    assert row["dtype"] == "bfloat16" and row["autocast_weight_bytes"] > 0
    assert [i["batch_size"] for i in row["inference"]] == [1, 2]
    assert (
        main(
            [
                "measure",
                "--backbone",
                TINY,
                "--method",
                "lora",
                "--amp",
                "bf16",
                "--inference",
                "--inference-batch-sizes",
                "4",
                "--repeats",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "autocast_weight_bytes=" in out and "dtype=bfloat16" in out and "inference batch 4:" in out
