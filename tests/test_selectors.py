"""The selector contract (:class:`vpeft.selectors.SelectorConfig`): a toy selector that implements only the contract
trains, resumes, reloads and is measured through the trainer, ``load_run``, ``vpeft measure`` and the CLI, which
therefore know no selector's own options (GPS's ``criterion``, ``level``, ``k``)."""

from dataclasses import dataclass, field

import pytest
import torch
from conftest import TINY
from safetensors.torch import load_file
from torch import nn

from vpeft.cli import main
from vpeft.config import RunConfig
from vpeft.engine.trainer import train
from vpeft.errors import ConfigError
from vpeft.measure import measure
from vpeft.registry import SELECTORS
from vpeft.run import build_model, load_run
from vpeft.selectors import SelectorConfig

PREPARED = []  # one entry per selection pass the toy ran


class Killed(Exception):
    pass


def _linears(model) -> dict[str, nn.Linear]:
    return {n: m for n, m in model.model.named_modules() if isinstance(m, nn.Linear) and m is not model.head}


class _Rows(nn.Module):
    """Trainable additions to some rows of one frozen Linear weight."""

    def __init__(self, linear: nn.Linear, rows: torch.Tensor):
        super().__init__()
        self.register_buffer("rows", rows.to(linear.weight.device, torch.long))
        self.delta = nn.Parameter(torch.zeros(len(rows), linear.in_features, device=linear.weight.device))


@dataclass(kw_only=True)
class FirstRowsConfig(SelectorConfig):
    """Toy selector: the first ``rows`` rows of every Linear weight but the head train, as added deltas.

    Args:
        rows: Rows per Linear, from the first.
    """

    rows: int = 1
    _images: int = field(default=0, init=False, repr=False, compare=False)

    def prepare(self, model, data, *, normalize="inception", batch_size=32, progress=False, source=None):
        PREPARED.append(len(data))
        self._images = len(data)
        return self.structure_only(model)

    def structure_only(self, model):
        return {n: torch.arange(self.rows) for n in _linears(model)}

    def apply(self, model, state):
        modules = nn.ModuleDict()
        for n, m in _linears(model).items():
            r = modules[n.replace(".", "_")] = _Rows(m, state[n])
            model.register_module_hook(m, post=lambda x, y, r=r: y.index_add(-1, r.rows, x @ r.delta.t()))
        model.extras[self.name] = modules
        model.selector = self

    def state_from_checkpoint(self, model, trainable_state):
        return {n: trainable_state[f"extras.{self.name}.{n.replace('.', '_')}.rows"] for n in _linears(model)}

    def record(self):
        return {"rows": self.rows, "pass_images": self._images}

    def describe(self):
        return f"the first {self.rows} row(s) of every Linear"


@pytest.fixture
def toy(monkeypatch):
    """``first_rows`` registered in SELECTORS for the test (the registry is restored after)."""
    monkeypatch.setattr(SELECTORS, "_registered", dict(SELECTORS._registered))
    SELECTORS.register("first_rows")(FirstRowsConfig)
    PREPARED.clear()
    return FirstRowsConfig


def _cfg(root, **train):
    t = {"epochs": 2, "batch_size": 8, "lr": 1e-2, "warmup_epochs": 0, **train}
    return RunConfig.from_dict(
        {
            "backbone": {"spec": TINY},
            "method": "linear",
            "selector": "first_rows",
            "data": {"root": str(root)},
            "train": t,
        }
    )


def _expected_trainable(cfg) -> int:
    model, _ = build_model(cfg, 3)
    return sum(m.in_features for m in _linears(model).values())


def test_the_contract_has_no_default_for_what_a_selector_must_say(toy):
    base = SelectorConfig()
    base.name = "bare"
    for call in (
        lambda: base.prepare(None, []),
        lambda: base.apply(None, {}),
        lambda: base.state_from_checkpoint(None, {}),
    ):
        with pytest.raises(NotImplementedError):
            call()
    with pytest.raises(ConfigError, match="'bare' needs data"):
        base.structure_only(None)
    with pytest.raises(ConfigError, match="'bare' cannot be merged"):
        base.merge(None)
    assert toy().count({"a": torch.arange(3), "b": torch.zeros(2, 2)}) == 7


def test_a_selector_of_the_contract_alone_trains_loads_and_measures(toy, small_task, tmp_path, capsys):
    assert not any(hasattr(toy, a) for a in ("scores", "select", "criterion", "k", "level"))
    cfg = _cfg(small_task)
    r = train(cfg, tmp_path / "r", progress=False)
    per_head = _expected_trainable(cfg)
    assert per_head == 2 * (32 + 32 + 32 + 128)  # qkv, proj, fc1, fc2 of 2 blocks
    sel = r["selection"]
    assert PREPARED == [sel["images"]] == [sel["pass_images"]] == [36]  # the pass saw train800val200: 24 + 12
    assert sel["selected"] == 8 and sel["rows"] == 1
    assert r["trainable_params_no_head"] == per_head
    sd = load_file(str(tmp_path / "r" / "trainable.safetensors"))
    deltas = {k: v for k, v in sd.items() if k.endswith(".delta")}
    assert len(deltas) == 8 and all(v.abs().sum() > 0 for v in deltas.values())  # every delta trained
    saved = load_file(str(tmp_path / "r" / "selection.safetensors"))
    assert sorted(saved) == sorted(_linears(load_run(tmp_path / "r")[0]))
    # load_run restores the selection from the checkpoint alone, and the model gives the recorded accuracy
    (tmp_path / "r" / "selection.safetensors").unlink()
    model = load_run(tmp_path / "r")[0]
    assert all(torch.equal(model.extras["first_rows"][k.split(".")[2]].delta, v) for k, v in deltas.items())
    assert main(["eval", "--run", str(tmp_path / "r")]) == 0 and "(same)" in capsys.readouterr().out
    # measure selects without data, through the contract
    m = measure(TINY, "linear", selector="first_rows", num_classes=3, timing=False)
    assert m["selector"] == "first_rows" and m["trainable_no_head"] == per_head
    assert (
        measure(TINY, "linear", selector="first_rows:rows=2", num_classes=3, timing=False)["trainable_no_head"]
        == 2 * per_head
    )


def test_a_resumed_run_reloads_the_selection_and_gives_the_same_result(toy, small_task, tmp_path):
    cfg = _cfg(small_task, epochs=3, save_every=1, drop_path=0.1)
    straight = train(cfg, tmp_path / "a", progress=False)

    def kill(epoch, entry):
        if epoch == 2:
            raise Killed()

    with pytest.raises(Killed):
        train(cfg, tmp_path / "b", progress=False, on_epoch_end=kill)
    PREPARED.clear()
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False)
    assert PREPARED == []  # the selection came from selection.safetensors, not from a second pass
    assert resumed["selection"] == straight["selection"] | {"seconds": resumed["selection"]["seconds"]}
    a, b = (load_file(str(tmp_path / d / "trainable.safetensors")) for d in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_acc"] == straight["test_acc"]


def test_the_train_summary_names_the_selection_as_the_selector_describes_it(toy, small_task, tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--data",
                str(small_task),
                "--backbone",
                TINY,
                "--method",
                "linear",
                "--selector",
                "first_rows:rows=2",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--out",
                str(tmp_path / "r"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "selector: the first 2 row(s) of every Linear" in capsys.readouterr().out
