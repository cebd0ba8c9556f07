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
