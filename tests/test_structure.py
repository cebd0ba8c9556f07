"""The package's structure: its import graph (read from the source) has no circle and no import that runs back up,
and a third-party plug-in joins through an entry point alone."""

import importlib.util
import textwrap
from pathlib import Path

import pytest
from conftest import install_plugin

from vpeft.cli import main
from vpeft.config import RunConfig
from vpeft.errors import ConfigError
from vpeft.registry import METHODS

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_graph.py"
_spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
import_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_graph)

#: The leaves a plug-in author reads: they import only each other.
LEAVES = {
    "vpeft.errors",
    "vpeft.files",
    "vpeft.version",
    "vpeft.zoo",
    "vpeft.presets",
    "vpeft.config_base",
    "vpeft.spec",
    "vpeft.registry",
    "vpeft.trainable",
}
#: What stands above the plug-ins: the run schema, the catalog, the engine and the commands.
ABOVE_PLUGINS = {
    "vpeft",
    "vpeft.catalog",
    "vpeft.config",
    "vpeft.run",
    "vpeft.measure",
    "vpeft.multitask",
    "vpeft.cli",
    "vpeft.docs",
    "vpeft.demo",
    "vpeft.engine.trainer",
    "vpeft.engine.optim",
}
#: The only vpeft module imported inside functions: it imports torchvision (over a second of start-up).
DEFERRED_OK = {"vpeft.data.augment"}


@pytest.fixture(scope="module")
def graph():
    edges, _, _, deferred = import_graph.graph()
    return edges, deferred


def test_the_import_graph_has_no_circle(graph):
    edges, _ = graph
    assert len(edges) > 50 and "vpeft.catalog" in edges and edges["vpeft"] >= {"vpeft.catalog"}
    assert import_graph.circles(edges) == []


def test_the_graph_reader_finds_a_circle(tmp_path, monkeypatch):
    """The check above can fail: a function-level import that runs back up closes a circle the reader sees."""
    pkg = tmp_path / "vpeft"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("from .sub.b import f\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import g\n")
    monkeypatch.setattr(import_graph, "ROOT", pkg)
    edges, counts, _, deferred = import_graph.graph()
    assert counts == {"module_level": 2, "function_level": 1} and deferred["vpeft.sub.b"] == {"vpeft.a"}
    assert import_graph.circles(edges) == [["vpeft.a", "vpeft.sub.b"]]


def test_no_import_runs_back_up(graph):
    edges, deferred = graph
    for mod in LEAVES:
        assert edges[mod] <= LEAVES, f"{mod} imports {sorted(edges[mod] - LEAVES)}"
    plugins = [m for m in edges if m.split(".")[1:2] in (["methods"], ["objectives"], ["selectors"])]
    assert len(plugins) > 15
    for mod in plugins:
        assert not edges[mod] & ABOVE_PLUGINS, f"plug-in module {mod} imports {sorted(edges[mod] & ABOVE_PLUGINS)}"
    # The data package stands in layers: entries, then decoding and the split cache, then the protocol helpers.
    assert not edges["vpeft.data.entries"] & {m for m in edges if m.startswith("vpeft.data")}
    assert "vpeft.data.sources" not in edges["vpeft.data.vtab"]
    lazy = {m: d for m, d in deferred.items() if d - DEFERRED_OK}
    assert lazy == {}, f"function-level imports of vpeft modules: {lazy}"


TOY = '''
from dataclasses import dataclass

from vpeft.methods.base import MethodConfig
from vpeft.registry import METHODS

from conftest import install_plugin


@METHODS.register("toy_bias")
@dataclass(kw_only=True)
class ToyBiasConfig(MethodConfig):
    """Toy plug-in: the biases of the first ``blocks`` blocks train.

    Args:
        blocks: How many blocks, from the first.
    """

    blocks: int = 1

    def inject(self, backbone) -> None:
        for block in backbone.model.blocks[: self.blocks]:
            for n, p in block.named_parameters():
                if n.endswith("bias"):
                    p.requires_grad_(True)


@dataclass(kw_only=True)
class ToyUnregistered(MethodConfig):
    """Toy plug-in named by its entry point."""

    def inject(self, backbone) -> None:
        pass
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A directory on ``sys.path`` holding module ``toy_vpeft_plugin`` and a dist-info whose entry points name it;
    ``write(entry_points_text)`` writes the entry points. ``METHODS`` reads its entry points again and is restored."""
    path = install_plugin(
        monkeypatch,
        tmp_path,
        {"toy_vpeft_plugin": TOY, "toy_vpeft_broken": "raise RuntimeError('the toy plug-in is broken')\n"},
        METHODS,
    )
    return lambda text: path.write_text(textwrap.dedent(text))


def test_a_plugin_joins_through_an_entry_point(plugin_dir, capsys):
    plugin_dir("""
        [vpeft.methods]
        toy = toy_vpeft_plugin
        toy_named = toy_vpeft_plugin:ToyUnregistered
    """)
    assert "toy_bias" in METHODS.names() and METHODS.get("toy_named").__name__ == "ToyUnregistered"
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "toy_bias: Toy plug-in: the biases of the first ``blocks`` blocks train." in out
    assert "    blocks = 1: How many blocks, from the first." in out and "toy_named: " in out
    cfg = RunConfig.from_dict({"method": "toy_bias:blocks=2"})
    assert cfg.method.name == "toy_bias" and cfg.method.blocks == 2


def test_a_failing_plugin_is_named(plugin_dir, capsys):
    plugin_dir("""
        [vpeft.methods]
        toy_broken = toy_vpeft_broken
    """)
    message = (
        r"method plug-in 'toy_broken' \(toy_vpeft_broken, entry point group 'vpeft.methods'\) failed to load: "
        r"RuntimeError: the toy plug-in is broken"
    )
    with pytest.raises(ConfigError, match=message):
        METHODS.get("linear")
    assert main(["list", "methods"]) == 2
    assert "plug-in 'toy_broken'" in capsys.readouterr().err
