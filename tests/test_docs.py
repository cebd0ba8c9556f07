import pytest

from vpeft.docs import BEGIN, END, expected_page, pages

PAGES = list(pages())


@pytest.mark.parametrize("path,cls", PAGES, ids=[p.stem for p, _ in PAGES])
def test_every_registered_plugin_has_an_up_to_date_page(path, cls):
    assert path.is_file(), f"{cls.name} has no docs page {path}"
    text = path.read_text()
    assert BEGIN in text and END in text, f"{path} lacks the generated config block"
    assert expected_page(path, cls) == text, f"{path} is out of date: run python -m vpeft.docs"
    body = text.split(BEGIN)[0]
    assert body.startswith("# ") and len(body.split()) > 40, f"{path}: write what it is, the paper and tips"


def test_readme_tables_match_the_committed_results():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "readme_tables.py"
    spec = importlib.util.spec_from_file_location("readme_tables", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--check"]) == 0, "README.md tables are stale: run python benchmarks/readme_tables.py"


def test_readme_names_every_registered_method():
    from pathlib import Path

    from vpeft import METHODS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [n for n in METHODS.names() if f"`{n}`" not in readme]
    assert not missing, f"README.md does not mention {missing}"


def _benchmarks():
    from pathlib import Path

    return sorted(
        p for p in (Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py") if not p.name.startswith("_")
    )


@pytest.mark.parametrize("path", _benchmarks(), ids=lambda p: p.stem)
def test_benchmark_scripts_import_and_document_themselves(path):
    """Every benchmark script imports and has a usage docstring naming the command that reproduces its result."""
    import importlib.util
    import sys

    if str(path.parent) not in sys.path:  # as `python benchmarks/x.py` does: the scripts import _common
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert callable(getattr(mod, "main", None))
    assert f"benchmarks/{path.name}" in (mod.__doc__ or ""), f"{path.name}: say how to run it in the docstring"
