"""Export a trained run to another library's adapter format (``vpeft export``).

``--format peft`` writes a Hugging Face PEFT adapter (``adapter_config.json`` + ``adapter_model.safetensors``) that
``peft.PeftModel.from_pretrained(timm_model, DIR)`` loads on the run's timm model (the same backbone weights and
architecture: :func:`base_model` builds it), with the same outputs. LoRA runs export: vpeft's ``q`` / ``k`` / ``v``
updates are slices of timm's fused ``qkv`` Linear, while PEFT adapts whole Linears, so the updates of one fused layer
become one LoRA of rank ``n * r`` on ``qkv`` whose B is block-structured (``B' = [[B_q, 0], [0, 0], [0, B_v]]``,
``A' = [A_q; A_v]``), with ``lora_alpha`` set so that PEFT's ``alpha / rank`` is vpeft's scale; ``qkv``, ``proj``,
``fc1`` and ``fc2`` targets map directly; ranks that differ by layer go to ``rank_pattern`` / ``alpha_pattern``. The
trained head travels as a module to save. The written adapter is loaded back and checked against the run's model on
a batch before the command returns. Methods PEFT lacks refuse, naming the method.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from .backbones import create_backbone
from .config import RunConfig
from .errors import ConfigError
from .methods.lora import _sites
from .methods.merge import timm_kwargs
from .run import load_run
from .rundir import RunDir

FORMATS = ("peft",)
#: Methods ``--format peft`` exports.
PEFT_METHODS = ("lora",)
#: What ``vpeft export`` writes beside PEFT's files: how to rebuild the base model without vpeft.
INFO_FILE = "vpeft_export.json"


def base_model(run_dir: str | Path) -> nn.Module:
    """The plain timm model a run was trained on: its backbone (same weights; random ones from the run's seed),
    architecture and pooling, with a fresh head of the run's size: what a PEFT adapter of the run loads onto."""
    cfg = RunConfig.from_dict(RunDir(run_dir).read_config())
    num_classes = _num_classes(run_dir, cfg)
    return _base(cfg, num_classes)


def _num_classes(run_dir, cfg: RunConfig) -> int:
    n = cfg.task.outputs or cfg.data.num_classes or (RunDir(run_dir).read_result() or {}).get(cfg.task.head_key)
    if n is None:
        raise ConfigError(f"{run_dir}: cannot tell the head's size (no data.num_classes, no result.json)")
    return n


def _base(cfg: RunConfig, num_classes: int) -> nn.Module:
    torch.manual_seed(cfg.train.seed)  # as build_model: a random-weight backbone comes from the run's seed
    bb = create_backbone(
        cfg.backbone.spec,
        num_classes,
        cfg.backbone.checkpoint,
        pretrained=cfg.backbone.pretrained,
        pool=cfg.backbone.pool,
        head_init=cfg.backbone.head_init,
    )
    return bb.model.eval()


def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}


def _lora_tensors(backbone, cfg) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor, float]], str]:
    """``({layer name: (A', B', alpha)}, head name)``: every adapted Linear of the timm model as one PEFT LoRA."""
    names = _module_names(backbone.model)
    by_layer: dict[int, list] = {}
    for (layer, _, sl), upd in zip(_sites(backbone, cfg.method.targets), backbone.extras["lora"]):
        by_layer.setdefault(id(layer), [layer, []])[1].append((sl, upd))
    out = {}
    for layer, parts in by_layer.values():
        rank = sum(u.lora_down.out_features for _, u in parts)
        a = torch.cat([u.lora_down.weight.detach() for _, u in parts])
        b = torch.zeros(layer.out_features, rank, dtype=a.dtype)
        col = 0
        for sl, u in parts:
            r = u.lora_down.out_features
            b[sl, col : col + r] = u.lora_up.weight.detach()
            col += r
        out[names[id(layer)]] = (a, b, cfg.method.scale * rank)
    return out, names[id(backbone.head)]


def _check_exportable(run_dir, cfg: RunConfig, model) -> None:
    if cfg.method.name not in PEFT_METHODS:
        raise ConfigError(
            f"method {cfg.method.name!r} has no Hugging Face PEFT counterpart that vpeft exports "
            f"(exported: {', '.join(PEFT_METHODS)}); a mergeable method can be folded into a plain timm "
            "model with 'vpeft merge' instead"
        )
    if cfg.selector is not None:
        raise ConfigError(
            f"selector {cfg.selector.name!r} has no Hugging Face PEFT counterpart: a selected run cannot be exported"
        )
    foreign = [k for k in model.extras if k != "lora"]
    if foreign:
        raise ConfigError(
            f"objective {cfg.objective.name!r} added modules {foreign} that PEFT has no place for; "
            "only runs whose model is the method's alone export"
        )
    head = _module_names(model)[id(model.head)]
    trained = set(RunDir(run_dir).read_trainable())
    other = sorted(k for k in trained if not k.startswith(("extras.lora.", head + ".")))
    if other:
        raise ConfigError(
            f"{run_dir}: tensors {other[:4]} trained beside LoRA and the head; a PEFT LoRA adapter cannot carry them"
        )


def export_peft(run_dir: str | Path, out: str | Path, check_batch: int = 2) -> Path:
    """Write a run as a Hugging Face PEFT adapter folder and check that PEFT reproduces the run's outputs.

    Args:
        run_dir: A finished run of a method in :data:`PEFT_METHODS`.
        out: The adapter folder (created; files of the same names are replaced).
        check_batch: Random images the written adapter is checked on (loaded back with ``PeftModel.from_pretrained``
            on :func:`base_model`).

    Returns:
        The folder.

    Raises:
        ConfigError: for a method, selector or objective PEFT has no counterpart for, or without ``peft`` installed.
    """
    try:
        from peft import LoraConfig, PeftModel, get_peft_model
    except ImportError:
        raise ConfigError("export --format peft needs the 'peft' package: pip install peft") from None
    model, _, cfg, num_classes = load_run(run_dir)
    _check_exportable(run_dir, cfg, model)
    layers, head = _lora_tensors(model, cfg)
    first = next(iter(layers.values()))
    rank, alpha = first[0].shape[0], first[2]
    pattern = {re.escape(n): (a.shape[0], al) for n, (a, _, al) in layers.items() if (a.shape[0], al) != (rank, alpha)}
    arch, kwargs = timm_kwargs(model)
    lora = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=sorted(layers),
        lora_dropout=cfg.method.dropout,
        bias="none",
        modules_to_save=[head],
        rank_pattern={k: r for k, (r, _) in pattern.items()},
        alpha_pattern={k: al for k, (_, al) in pattern.items()},
        init_lora_weights=False,
    )
    base = _base(cfg, num_classes)
    peft_model = get_peft_model(base, lora)
    with torch.no_grad():
        modules = dict(peft_model.base_model.model.named_modules())
        for name, (a, b, _) in layers.items():
            modules[name].lora_A["default"].weight.copy_(a)
            modules[name].lora_B["default"].weight.copy_(b)
        src = dict(model.head.named_parameters())
        for k, p in modules[head].modules_to_save["default"].named_parameters():
            p.copy_(src[k])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out))
    info = {
        "format": "peft",
        "run": str(run_dir),
        "backbone": cfg.backbone.spec,
        "checkpoint": cfg.backbone.checkpoint,
        "timm_name": arch,
        "timm_kwargs": kwargs,
        "method": cfg.method.to_dict(),
        "base_model": "vpeft.export.base_model(run) builds the model this adapter loads onto",
    }
    (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    # The written files, as a user loads them, against the run's own model.
    x = torch.randn(check_batch, 3, *model.input_size, generator=torch.Generator().manual_seed(0))
    loaded = PeftModel.from_pretrained(_base(cfg, num_classes), str(out)).eval()
    with torch.no_grad():
        want, got = model(x), loaded(x)
    if not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
        raise ConfigError(
            f"the PEFT adapter in {out} does not reproduce {run_dir}'s outputs (max difference "
            f"{(got - want).abs().max().item():.3g}); please report this"
        )
    return out


def export(run_dir: str | Path, out: str | Path, fmt: str = "peft") -> Path:
    """Export a run in format ``fmt`` (``peft``) to ``out``."""
    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return export_peft(run_dir, out)
