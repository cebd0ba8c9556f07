"""Golden values: the first two training losses of a fixed run on the shipped backbone, for every registered method with
``ce`` and with ``gist`` (and the GPS selector), stored here. Any change of numerics, intended or not, fails this test
and has to be reviewed and recorded by updating the values (``python tests/test_golden.py`` prints them).

The run: ``vit_c10_small`` (shipped CIFAR-10 weights), seed 0, 10 classes, one fixed batch of 16 random images, the
method's defaults, AdamW at lr 1e-3 (weight decay 1e-4), train mode, fp32 on the CPU, two steps.
"""

import math
import sys

import pytest
import torch

from vpeft import SELECTORS
from vpeft.config import RunConfig
from vpeft.engine.optim import build_optimizer, param_groups, trainable_named_parameters
from vpeft.methods import methods_for
from vpeft.run import build_model

BACKBONE = "vit_c10_small"

GOLDEN = {
    # recorded with `python tests/test_golden.py`: the losses of step 1 and step 2
    "adapter+ce": [2.431100368499756, 2.3720102310180664],
    "adapter+gist": [3.5832018852233887, 3.5130887031555176],
    "adapter_ps+ce": [2.4314987659454346, 2.3759021759033203],
    "adapter_ps+gist": [3.5834686756134033, 3.518524408340454],
    "adaptformer+ce": [2.4314844608306885, 2.3763155937194824],
    "adaptformer+gist": [3.58343505859375, 3.5191237926483154],
    "bitfit+ce": [2.431495428085327, 2.3666045665740967],
    "bitfit+gist": [3.6306958198547363, 3.5425827503204346],
    "dtl+ce": [2.3811705112457275, 2.3200645446777344],
    "dtl+gist": [3.5692496299743652, 3.487299680709839],
    "dtl_plus+ce": [2.3811705112457275, 2.321309804916382],
    "dtl_plus+gist": [3.5470781326293945, 3.4856491088867188],
    "fact_tk+ce": [2.431495428085327, 2.376342535018921],
    "fact_tk+gist": [3.6094000339508057, 3.51613712310791],
    "fact_tt+ce": [2.431495428085327, 2.375551462173462],
    "fact_tt+gist": [3.580864906311035, 3.517096996307373],
    "full+ce": [2.431495428085327, 2.0405092239379883],
    "full+gist": [3.6306958198547363, 3.1041550636291504],
    "linear+ce": [2.431495428085327, 2.3767542839050293],
    "linear+gist": [3.6306958198547363, 3.557978630065918],
    "lora+ce": [2.431495428085327, 2.3732941150665283],
    "lora+gist": [3.6004631519317627, 3.5132436752319336],
    "ssf+ce": [2.429723024368286, 2.3607919216156006],
    "ssf+gist": [3.590463638305664, 3.49935245513916],
    "vpt_deep+ce": [2.427274227142334, 2.369251251220703],  # prompt dropout 0.0 (VPT's default) since issue 15
    "vpt_deep+gist": [3.619508743286133, 3.552961826324463],  # prompt dropout 0.0 (VPT's default) since issue 15
    "vpt_shallow+ce": [2.3951947689056396, 2.3372385501861572],  # prompt dropout 0.0 (VPT's default) since issue 15
    "vpt_shallow+gist": [3.5724401473999023, 3.5121545791625977],  # prompt dropout 0.0 (VPT's default) since issue 15
    "linear+ce+gps": [2.431495428085327, 2.364499568939209],
    "linear+gist+gps": [3.6306958198547363, 3.5400490760803223],
}


def cases():
    out = [(m, o, None) for m in methods_for("timm") for o in ("ce", "gist")]
    out += [("linear", o, s) for s in SELECTORS.names() for o in ("ce", "gist")]
    return out


def key(method, objective, selector) -> str:
    return f"{method}+{objective}" + (f"+{selector}" if selector else "")


def first_losses(method: str, objective: str, selector=None) -> list[float]:
    sel = None
    if selector is not None:  # a selection that needs no data (the structure of GPS, not its gradient pass)
        sel = {"name": selector, **getattr(SELECTORS.get(selector), "test_overrides", {})}
    cfg = RunConfig.from_dict(
        {
            "backbone": {"spec": BACKBONE},
            "method": method,
            "objective": objective,
            "selector": sel,
            "train": {"lr": 1e-3, "weight_decay": 1e-4, "seed": 0},
        }
    )
    torch.manual_seed(0)
    model, obj = build_model(cfg, 10)
    if cfg.selector is not None:
        cfg.selector.apply(model, cfg.selector.structure_only(model))  # the selector contract: no data
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, *model.input_size, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    opt = build_optimizer(param_groups(trainable_named_parameters(model, obj), cfg.train), cfg.train)
    model.train(), obj.train()
    losses = []
    for _ in range(2):
        loss = obj(model, x, y)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("method,objective,selector", cases(), ids=lambda v: str(v))
def test_first_two_losses_are_the_recorded_ones(method, objective, selector):
    k = key(method, objective, selector)
    got = first_losses(method, objective, selector)
    assert k in GOLDEN, f"no golden values for {k}: record {got!r} (python tests/test_golden.py)"
    for step, (a, b) in enumerate(zip(got, GOLDEN[k]), 1):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6), f"{k}, step {step}: {a!r} != recorded {b!r}"


if __name__ == "__main__":  # print the values to paste into GOLDEN
    torch.set_num_threads(1)
    for c in cases():
        print(f"    {key(*c)!r}: {first_losses(*c)!r},", file=sys.stdout, flush=True)
