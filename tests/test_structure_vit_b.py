"""Structure checks on the real ViT-B/16 (random weights): parameter counts and memory accounting at batch 1."""

import pytest

from vpeft.measure import MEASURE_KEYS, measure

VIT_B = "vit_base_patch16_224"
EXPECTED_NO_HEAD = {"linear": 0, "bitfit": 102_912, "full": 85_798_656}


@pytest.fixture(scope="module")
def vit_b_rows():
    return {m: measure(VIT_B, m, batch_size=1, num_classes=10, timing=False) for m in EXPECTED_NO_HEAD}


@pytest.mark.parametrize("method", sorted(EXPECTED_NO_HEAD))
def test_vit_b_trainable_counts(vit_b_rows, method):
    row = vit_b_rows[method]
    assert row["trainable_no_head"] == EXPECTED_NO_HEAD[method]
    assert row["trainable"] == EXPECTED_NO_HEAD[method] + 768 * 10 + 10
    assert row["total"] == 85_798_656 + 7_690


def test_vit_b_saved_activation_ratios(vit_b_rows):
    full = vit_b_rows["full"]["saved_activation_bytes"]
    assert vit_b_rows["linear"]["saved_activation_bytes"] < 0.01 * full
    assert 0.5 * full <= vit_b_rows["bitfit"]["saved_activation_bytes"] <= 0.8 * full
    # DESIGN.md: full fine-tuning of ViT-B/16 keeps about 225 MiB of activations at batch 2 (so ~112 MiB at 1)
    assert 100 * 2**20 < full < 125 * 2**20


def test_vit_b_memory_sums(vit_b_rows):
    for row in vit_b_rows.values():
        assert set(MEASURE_KEYS) | {"method", "objective"} == set(row)
        parts = ("saved_activation_bytes", "param_bytes", "grad_bytes", "optimizer_state_bytes")
        assert row["train_memory_bytes"] == sum(row[k] for k in parts)
        assert row["grad_bytes"] == 4 * row["trainable"]
    # AdamW keeps two fp32 moments per trainable value (+ a scalar step per tensor)
    full = vit_b_rows["full"]
    assert 2 * full["grad_bytes"] <= full["optimizer_state_bytes"] < 2 * full["grad_bytes"] + 4 * 1000
