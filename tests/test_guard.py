"""The guard of the core refactor (issue 16): whole training runs whose results must not move while code moves.

For every registered method with ``ce`` and with ``gist``, the GPS selector and an iDAT preset: the shipped
``vit_c10_small`` (iDAT: ``vit_c10_base`` taught by ``vit_c10_small``), the generated ``shapes`` task (trained on its
200 ``val200`` images, tested on 200), 2 epochs, batch 32, seed 0, on the CPU. Recorded: the per-epoch losses, the test
accuracy and a SHA-256 of the trainable tensors. On the build and CPU kind they were recorded with the hash must match
bit for bit; elsewhere (another CPU's kernels round differently) the losses must match to 1e-5 and the accuracy to
one image. ``python tests/test_guard.py`` prints the values to record.
"""

import hashlib
import json
import math
import tempfile
from pathlib import Path

import pytest
import torch

from vpeft import METHODS

RECORDED_ON = {"torch": "2.14.1+cu130", "cpu": "AVX512", "threads": 2}
GUARD = {
    # recorded with `python tests/test_guard.py`: epoch losses, test accuracy, trainable hash
    "adapter+ce": {"losses": [1.4072761964797973, 1.2955758333206178], "test_acc": 24.5, "hash": "02b0963a6bdf93bf"},
    "adapter+gist": {"losses": [2.1159098291397096, 1.9774970722198486], "test_acc": 24.0, "hash": "930e789c7dcf43f6"},
    "adapter_ps+ce": {"losses": [1.406027512550354, 1.2957192087173461], "test_acc": 24.5, "hash": "e5a166a10fae0e78"},
    "adapter_ps+gist": {
        "losses": [2.1137126064300538, 1.9751703548431396],
        "test_acc": 25.5,
        "hash": "24bad8249c1cf837",
    },
    "adaptformer+ce": {
        "losses": [1.4058992815017701, 1.2960006618499755],
        "test_acc": 24.5,
        "hash": "8246d74564954add",
    },
    "adaptformer+gist": {
        "losses": [2.1133891010284422, 1.9753498554229736],
        "test_acc": 24.5,
        "hash": "625ddb040cc6248e",
    },
    "bitfit+ce": {"losses": [1.4093263864517211, 1.3035685682296754], "test_acc": 25.0, "hash": "1646c62dacd2ec2a"},
    "bitfit+gist": {"losses": [2.1132135438919066, 1.9693919467926024], "test_acc": 24.5, "hash": "29aea70361486d8e"},
    "dtl+ce": {"losses": [1.4175426864624023, 1.3173470497131348], "test_acc": 22.0, "hash": "09bb0afe6fcff4d4"},
    "dtl+gist": {"losses": [2.1240510654449465, 1.98952054977417], "test_acc": 22.0, "hash": "509fea77a9249169"},
    "dtl_plus+ce": {"losses": [1.4182831096649169, 1.3154029655456543], "test_acc": 23.5, "hash": "570e58b9fbc55ce9"},
    "dtl_plus+gist": {"losses": [2.1146469497680664, 1.9824835014343263], "test_acc": 23.5, "hash": "b02e145d7b3eb5dc"},
    "fact_tk+ce": {"losses": [1.40573184967041, 1.2947730445861816], "test_acc": 24.0, "hash": "e8c7f5e5b54c1281"},
    "fact_tk+gist": {"losses": [2.114136972427368, 1.973173360824585], "test_acc": 26.0, "hash": "bb0f7fbcffe15c9c"},
    "fact_tt+ce": {"losses": [1.4042487335205078, 1.2899492359161377], "test_acc": 23.5, "hash": "aa10df5ec915a994"},
    "fact_tt+gist": {"losses": [2.104752531051636, 1.9534316635131836], "test_acc": 26.5, "hash": "b52d944aced8ad60"},
    "full+ce": {"losses": [1.4141870737075806, 1.280579195022583], "test_acc": 20.5, "hash": "5d9324e369cd6056"},
    "full+gist": {"losses": [2.1285716342926024, 1.969712381362915], "test_acc": 22.0, "hash": "853afebff43122d0"},
    "linear+ce": {"losses": [1.4284164714813232, 1.306441969871521], "test_acc": 26.0, "hash": "71e0455fa541b9d3"},
    "linear+gist": {"losses": [2.13047739982605, 1.9839615440368652], "test_acc": 28.0, "hash": "c44de5711522c547"},
    "lora+ce": {"losses": [1.404570083618164, 1.2803079557418824], "test_acc": 24.0, "hash": "312564ea8015b06e"},
    "lora+gist": {"losses": [2.113797969818115, 1.9613395881652833], "test_acc": 24.0, "hash": "21b4a30ad19376b6"},
    "ssf+ce": {"losses": [1.4106865787506104, 1.2961866521835328], "test_acc": 26.5, "hash": "b1ac1b6accf32b42"},
    "ssf+gist": {"losses": [2.1218159198760986, 1.969769411087036], "test_acc": 24.5, "hash": "a8489f49c8526c48"},
    "vpt_deep+ce": {"losses": [1.4082809495925903, 1.3273685598373413], "test_acc": 24.0, "hash": "f604e6d6c62ed35e"},
    "vpt_deep+gist": {"losses": [2.1157889366149902, 2.0030790615081786], "test_acc": 22.5, "hash": "8f586216d19734b0"},
    "vpt_shallow+ce": {"losses": [1.4114186954498291, 1.357806510925293], "test_acc": 20.5, "hash": "4661bf322b3522ac"},
    "vpt_shallow+gist": {
        "losses": [2.123117847442627, 2.046235694885254],
        "test_acc": 21.5,
        "hash": "d52ff82d69aa0d71",
    },
    "gps": {"losses": [1.403677568435669, 1.3281922721862793], "test_acc": 24.0, "hash": "1e34692c75fce040"},
    "idat-ps-kl": {"losses": [2.826547622680664, 2.72066686630249], "test_acc": 21.0, "hash": "a8f8880578b10d0b"},
}


def cases() -> list[tuple[str, dict]]:
    out = []
    for m in METHODS.names():
        lr = {"full": 1e-3, "linear": 1e-2}.get(m, 5e-3)
        for objective in ("ce", "gist"):
            out.append((f"{m}+{objective}", {"method": m, "objective": objective, "train": {"lr": lr}}))
    out.append(
        (
            "gps",
            {"method": "linear", "selector": "gps", "train": {"lr": 2e-3, "optimizer": "adam", "weight_decay": 0.0}},
        )
    )
    out.append(
        (
            "idat-ps-kl",
            {
                "backbone": {"spec": "vit_c10_base"},
                "method": "adapter_ps:dim=4,scale=0.1",
                "objective": {"name": "idat", "loss": "kl", "teacher": "vit_c10_small"},
            },
        )
    )
    return out


def _platform() -> dict:
    return {
        "torch": torch.__version__,
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }


def run_case(spec: dict, root: Path, out: Path) -> dict:
    from vpeft.config import RunConfig
    from vpeft.engine.trainer import train

    d = {
        "backbone": {"spec": "vit_c10_small"},
        "objective": "ce",
        **spec,
        "data": {"root": str(root), "train_split": "val200"},
        "train": {
            "epochs": 2,
            "batch_size": 32,
            "seed": 0,
            "weight_decay": 1e-4,
            "device": "cpu",
            **spec.get("train", {}),
        },
    }
    r = train(RunConfig.from_dict(d), out, progress=False)
    from safetensors.torch import load_file

    tensors = load_file(str(out / "trainable.safetensors"))
    digest = hashlib.sha256(b"".join(k.encode() + tensors[k].numpy().tobytes() for k in sorted(tensors))).hexdigest()
    losses = [json.loads(x)["loss"] for x in (out / "log.jsonl").read_text().splitlines()]
    return {"losses": losses, "test_acc": r["test_acc"], "hash": digest[:16]}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    from vpeft.data.synth import generate_task

    return generate_task(tmp_path_factory.mktemp("guard"), "shapes", n_test=200)


@pytest.mark.parametrize("name,spec", cases(), ids=[c[0] for c in cases()])
def test_a_whole_run_gives_the_recorded_results(name, spec, shapes, tmp_path):
    got = run_case(spec, shapes, tmp_path / "run")
    assert name in GUARD, f"no recorded results for {name}: record {got!r} (python tests/test_guard.py)"
    want = GUARD[name]
    if _platform() == RECORDED_ON:
        assert got == want, name
        return
    assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(got["losses"], want["losses"])), (name, got, want)
    assert abs(got["test_acc"] - want["test_acc"]) <= 0.5, (name, got, want)  # one image of 200


if __name__ == "__main__":  # print the values to record
    torch.set_num_threads(2)
    from vpeft.data.synth import generate_task

    with tempfile.TemporaryDirectory() as tmp:
        root = generate_task(tmp, "shapes", n_test=200)
        print(f"RECORDED_ON = {_platform()!r}")
        for name, spec in cases():
            print(f"    {name!r}: {run_case(spec, root, Path(tmp) / name)!r},", flush=True)
