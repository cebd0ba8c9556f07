"""Backbone families: the ``FAMILIES`` registry, the family prefix of a backbone spec, the ``timm`` family building
what a bare name built, and a third-party family that joins through an entry point and trains end to end."""

import pytest
import torch
from conftest import TINY, TINY_CONVNEXT, TINY_SWIN, install_plugin

import vpeft
from vpeft.backbones import Family, create_backbone, split_backbone_spec
from vpeft.config import RunConfig
from vpeft.engine.trainer import train
from vpeft.errors import CheckpointError, ConfigError
from vpeft.registry import FAMILIES

TOY = '''
import timm
from safetensors.torch import load_file

from vpeft.backbones import Family
from vpeft.errors import ConfigError
from vpeft.registry import FAMILIES

SIZES = {"tiny": dict(embed_dim=16, depth=1, num_heads=2), "small": dict(embed_dim=32, depth=2, num_heads=2)}


@FAMILIES.register("toy")
class Toy(Family):
    """Toy family: 16 px timm ViTs named by size; its checkpoints hold the weights under ``toy.``."""

    def resolve(self, name, kwargs):
        if name not in SIZES:
            raise ConfigError(f"unknown toy backbone {name!r}")
        return "vit_tiny_patch16_224", {"img_size": 16, "patch_size": 8, **SIZES[name], **kwargs}

    def create(self, arch, kwargs, *, drop_path=0.0, pretrained=False):
        if pretrained:
            raise RuntimeError("the toy family publishes no weights")
        return timm.create_model(arch, num_classes=0, drop_path_rate=drop_path, **kwargs)

    def load_checkpoint(self, model, path):
        sd = {k.removeprefix("toy."): v for k, v in load_file(str(path)).items()}
        model.load_state_dict(sd, strict=True)
'''


@pytest.fixture
def toy_family(tmp_path, monkeypatch):
    """Module ``toy_vpeft_family`` on ``sys.path`` and a dist-info whose ``vpeft.families`` entry point names it;
    ``FAMILIES`` reads its entry points again and is restored afterwards."""
    install_plugin(
        monkeypatch, tmp_path, {"toy_vpeft_family": TOY}, FAMILIES, "[vpeft.families]\ntoy = toy_vpeft_family\n"
    )
    yield FAMILIES.get("toy")


def _state(backbone) -> dict:
    return {k: v.clone() for k, v in backbone.model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_built_in_families():
    assert vpeft.FAMILIES is FAMILIES and FAMILIES.names() == ["clip", "hf_text", "sam", "t5", "timm"]
    assert all(issubclass(FAMILIES.get(n), Family) for n in ("timm", "sam", "clip", "hf_text", "t5"))
    registered = r"Registered backbone families: clip, hf_text, sam, t5, timm"
    with pytest.raises(ConfigError, match=r"unknown backbone family 'nosuch'\. " + registered):
        FAMILIES.get("nosuch")


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("vit_base_patch16_224", ("timm", "vit_base_patch16_224", {})),
        (
            "vit_tiny_patch16_224:img_size=32,patch_size=8",
            ("timm", "vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8}),
        ),
        ("vit_tiny_patch16_224:", ("timm", "vit_tiny_patch16_224", {})),
        ("timm:vit_c10_base", ("timm", "vit_c10_base", {})),
        (
            "timm:vit_tiny_patch16_224:img_size=32,depths=[1,1]",
            ("timm", "vit_tiny_patch16_224", {"img_size": 32, "depths": [1, 1]}),
        ),
        # A registered family's name followed by key=value items is a (here unknown) timm name with overrides.
        ("timm:img_size=32", ("timm", "timm", {"img_size": 32})),
        (
            "vit_tiny_patch16_224:note='a:b',img_size=32",
            ("timm", "vit_tiny_patch16_224", {"note": "a:b", "img_size": 32}),
        ),
    ],
)
def test_a_spec_names_its_family_only_by_a_registered_prefix(spec, expected):
    assert split_backbone_spec(spec) == expected


def test_a_prefix_that_is_no_family_is_refused_with_both_readings():
    with pytest.raises(
        ConfigError,
        match=r"'nosuch' is not a backbone family \(registered: clip, hf_text, sam, t5, timm\) and 'vit_b' is not a "
        r"key=value item",
    ):
        split_backbone_spec("nosuch:vit_b")
    with pytest.raises(ConfigError, match=r"'vit_tiny_patch16_224' is not a backbone family .* 'img_size' is not"):
        create_backbone("vit_tiny_patch16_224:img_size", num_classes=2)
    with pytest.raises(ConfigError, match=r"no model name after the family; write timm:name"):
        split_backbone_spec("timm:")
    with pytest.raises(ConfigError, match=r"unknown backbone 'timm': not a timm model name"):
        create_backbone("timm:img_size=32", num_classes=2)


@pytest.mark.parametrize("spec", [TINY, TINY_SWIN, TINY_CONVNEXT])
def test_the_timm_family_builds_what_a_bare_name_builds(spec):
    """Bare and prefixed specs give the same weights, and both equal timm's own model from the same seed."""
    import timm

    torch.manual_seed(0)
    bare = create_backbone(spec, num_classes=5, drop_path=0.1)
    torch.manual_seed(0)
    prefixed = create_backbone("timm:" + spec, num_classes=5, drop_path=0.1)
    assert _same(_state(bare), _state(prefixed)) and prefixed.spec == "timm:" + spec
    name, _, rest = spec.partition(":")
    torch.manual_seed(0)
    kwargs = split_backbone_spec(spec)[2]
    plain = timm.create_model(name, num_classes=0, drop_path_rate=0.1, **kwargs).state_dict()
    head = bare.model.pretrained_cfg.get("classifier", "head")
    assert _same({k: v for k, v in _state(bare).items() if not k.startswith(head)}, plain)
    assert max(m.drop_prob for m in bare.model.modules() if type(m).__name__ == "DropPath") == pytest.approx(0.1)


def test_the_timm_family_loads_the_zoo_weights():
    bare, prefixed = create_backbone("vit_c10_small", 3), create_backbone("timm:vit_c10_small", 3)
    body = lambda b: {k: v for k, v in _state(b).items() if not k.startswith("head")}  # noqa: E731
    assert _same(body(bare), body(prefixed))


def test_a_family_joins_through_an_entry_point(toy_family, tmp_path):
    assert FAMILIES.names() == ["clip", "hf_text", "sam", "t5", "timm", "toy"]
    assert toy_family.__name__ == "Toy" and toy_family.name == "toy"
    assert split_backbone_spec("toy:tiny:depth=2") == ("toy", "tiny", {"depth": 2})
    bb = create_backbone("toy:small:depth=1", num_classes=4, drop_path=0.2)
    assert bb.embed_dim == 32 and len(bb.blocks) == 1 and bb.input_size == (16, 16) and bb.num_classes == 4
    assert bb(torch.zeros(2, 3, 16, 16)).shape == (2, 4)
    with pytest.raises(ConfigError, match=r"unknown toy backbone 'huge'"):
        create_backbone("toy:huge", num_classes=2)
    with pytest.raises(CheckpointError, match=r"could not fetch the hub weights .* the toy family publishes no"):
        create_backbone("toy:tiny", num_classes=2, pretrained=True)


def test_a_family_loads_its_own_checkpoints(toy_family, tmp_path):
    """The toy family's weights (keys under ``toy.``) load through it; timm's strict loader refuses them."""
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = create_backbone("toy:tiny", num_classes=2)
    path = tmp_path / "toy_tiny.safetensors"
    save_file(
        {f"toy.{k}": v.contiguous() for k, v in source.model.state_dict().items() if not k.startswith("head")},
        str(path),
    )
    torch.manual_seed(2)
    loaded = create_backbone("toy:tiny", num_classes=2, checkpoint=path)
    body = lambda b: {k: v for k, v in _state(b).items() if not k.startswith("head")}  # noqa: E731
    assert _same(body(loaded), body(source))
    with pytest.raises(CheckpointError, match="does not match the backbone"):
        create_backbone(
            "vit_tiny_patch16_224:img_size=16,patch_size=8,embed_dim=16,depth=1,num_heads=2", 2, checkpoint=path
        )


def test_a_family_backbone_trains_end_to_end(toy_family, small_task, tmp_path):
    """``backbone: {spec: toy:tiny}`` trains through the trainer, exactly as the timm spec of the same model does."""
    runs = {}
    for spec in ("toy:tiny", "vit_tiny_patch16_224:img_size=16,patch_size=8,embed_dim=16,depth=1,num_heads=2"):
        cfg = RunConfig.from_dict(
            {
                "backbone": {"spec": spec},
                "method": "lora",
                "data": {"root": str(small_task)},
                "train": {"epochs": 2, "batch_size": 8, "lr": 1e-2, "warmup_epochs": 0, "seed": 0},
            }
        )
        log = []
        result = train(cfg, tmp_path / spec.partition(":")[0], progress=False, on_epoch_end=lambda e, x: log.append(x))
        runs[spec] = result, log
    (toy, toy_log), (timm, timm_log) = runs.values()
    assert toy["backbone"] == "toy:tiny" and toy["protocol"]["img_size"] == [16, 16]
    assert toy["trainable_params_no_head"] == 2 * 2 * (16 * 8) and len(toy_log) == 2  # LoRA rank 8 on q and v
    assert [(e["loss"], e["train_acc"]) for e in toy_log] == [(e["loss"], e["train_acc"]) for e in timm_log]
    assert all(toy[k] == timm[k] for k in ("test_correct", "trainable_params", "total_params"))
