"""Named presets: a method and an objective that together reproduce a paper's variant.

``vpeft train --preset idat-ps-kl ...`` fills ``method`` and ``objective``; explicit ``--method``/``--objective``
and dotted overrides still apply on top.
"""

from __future__ import annotations

import difflib

from .errors import ConfigError

PRESETS: dict[str, dict] = {
    # iDAT (arXiv:2403.15750): S = sequential adapter after the block (no scale), P = AdaptFormer (scale 0.1),
    # PS = parallel-shared adapter (scale 0.1); hidden size 4; the teacher gets the same method.
    **{
        f"idat-{v}-{loss}": {
            "method": method,
            "objective": {"name": "idat", "loss": loss},
            "about": f"iDAT-{v.upper()} with the {loss} distillation term: {method} on the student and on a ViT-S teacher",  # noqa: E501
        }
        for v, method in (
            ("s", "adapter:dim=4,position=block"),
            ("p", "adaptformer:dim=4,scale=0.1"),
            ("ps", "adapter_ps:dim=4,scale=0.1"),
        )
        for loss in ("mse", "kl")
    },
    "gist-adapter": {
        "method": "adapter_ps:dim=4",
        "objective": {"name": "gist"},
        "about": "GIST with its parallel-shared adapter (83,760 trainable on ViT-B/16 without the head)",
    },
    "dtl-plus-star": {
        "method": "dtl_plus:first_block=1",
        "objective": {"name": "ce"},
        "about": "DTL+* (every block adapted)",
    },
    # NOAH's baselines as its code runs them (its init_weights re-initialises every Linear; dropout and drop-path
    # placement of its modules), not as its module code reads.
    "noah-lora": {
        "method": "lora:targets=[qkv],init=trunc_normal,dropout=0.1",
        "objective": {"name": "ce"},
        "about": "NOAH's LoRA: fused qkv, A and B trunc-normal 0.02, input dropout 0.1",
    },
    "noah-adapter": {
        "method": "adapter:dim=8,position=mlp_drop_path,act=quick_gelu,init=trunc_normal,dropout=0.1",
        "objective": {"name": "ce"},
        "about": "NOAH's adapter: x + DP(h) + A(DP(h)), hidden 8, quick-GELU, trunc-normal, dropout 0.1",
    },
    "noah-vpt": {
        "method": "vpt_deep:init=noah,dropout=0.1",
        "objective": {"name": "ce"},
        "about": "NOAH's VPT-deep: xavier-uniform prompts per block, prompt dropout 0.1",
    },
}


def get_preset(name: str) -> dict:
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown preset {name!r}.{hint} Presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
