"""Generated GLUE-layout text tasks (issue 20): for tests, CI and examples, where GLUE is not at hand.

``RTE`` (sentence pairs, label ``entailment`` when the second sentence's colour and animal are the first's, else
``not_entailment``) and ``STS-B`` (sentence pairs scored 0-5 by how many of five attributes they share), written as
GLUE's TSV files (``train.tsv``, ``dev.tsv`` with headers, tab-separated, unquoted), so the ``glue`` layout reads them
as it reads the real ones. The same seed gives byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = ("red", "blue", "green", "yellow", "black", "white")
ANIMALS = ("cat", "dog", "horse", "bird", "fish", "mouse")
PLACES = ("garden", "house", "river", "forest", "street", "field")
VERBS = ("sleeps", "runs", "eats", "sits", "plays", "waits")
TIMES = ("today", "tonight", "now", "again", "often", "early")
#: Examples per file.
SIZES = {"train": 240, "dev": 80}


def _sentence(attrs) -> str:
    c, a, p, v, t = attrs
    return f"the {COLOURS[c]} {ANIMALS[a]} {VERBS[v]} in the {PLACES[p]} {TIMES[t]}"


def _pair(rng: np.random.Generator, share: int) -> tuple[str, str]:
    """Two sentences sharing ``share`` of their five attributes (the first ``share`` in a random order)."""
    first = rng.integers(0, 6, 5)
    second = first.copy()
    for k in rng.permutation(5)[: 5 - share]:
        second[k] = (first[k] + rng.integers(1, 6)) % 6
    return _sentence(first), _sentence(second)


def generate_glue(out: str | Path, seed: int = 0) -> list[Path]:
    """Write ``out/RTE`` and ``out/STS-B``; return the two folders."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    folders = []
    rte = out / "RTE"
    rte.mkdir(parents=True, exist_ok=True)
    for split, n in SIZES.items():
        lines = ["index\tsentence1\tsentence2\tlabel"]
        for i in range(n):
            entail = bool(rng.integers(0, 2))
            first = rng.integers(0, 6, 5)
            second = rng.integers(0, 6, 5)
            if entail:
                second[:2] = first[:2]
            elif second[0] == first[0] and second[1] == first[1]:
                second[1] = (first[1] + 1) % 6
            label = "entailment" if entail else "not_entailment"
            lines.append(f"{i}\t{_sentence(first)}\t{_sentence(second)}\t{label}")
        (rte / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    folders.append(rte)
    sts = out / "STS-B"
    sts.mkdir(parents=True, exist_ok=True)
    for split, n in SIZES.items():
        lines = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
        for i in range(n):
            share = int(rng.integers(0, 6))
            a, b = _pair(rng, share)
            lines.append(f"{i}\tmain-synth\tsynth\t2026\t{i:04d}\tnone\tnone\t{a}\t{b}\t{share:.3f}")
        (sts / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    folders.append(sts)
    return folders
