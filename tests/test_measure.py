import pytest
import torch

from vpeft.measure import MEASURE_KEYS, SavedTensorProbe, measure

from conftest import TINY


def test_probe_counts_storages_once_and_skips_parameters():
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8, requires_grad=True)
    with SavedTensorProbe(lin) as probe:
        h = lin(x)           # saves x (for the weight grad) and a view of the weight (excluded)
        y = h.relu()         # saves its output (4 x 8)
        z = (y[:2] * y[2:])  # saves two views of the same storage: counted once
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
        r[k] for k in ("saved_activation_bytes", "param_bytes", "grad_bytes", "optimizer_state_bytes"))
    assert r["step_seconds"] > 0 and r["param_bytes"] == 4 * r["total"]
    # AdamW: two moments per trainable value plus one scalar step per tensor
    assert 8 * r["trainable"] <= r["optimizer_state_bytes"] <= 8 * r["trainable"] + 4 * 100


def test_activation_order_and_linearity_in_batch():
    rows = {m: measure(TINY, m, batch_size=4, timing=False)["saved_activation_bytes"] for m in ("linear", "bitfit", "full")}
    assert rows["linear"] < rows["bitfit"] < rows["full"]
    full8 = measure(TINY, "full", batch_size=8, timing=False)["saved_activation_bytes"]
    assert abs(full8 - 2 * rows["full"]) < 0.01 * full8
