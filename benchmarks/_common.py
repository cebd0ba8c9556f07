"""What every benchmark script shares: the command line it records and how it writes its result files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"


def command(script: str, argv=None) -> str:
    """The command that reproduces a result, e.g. ``python benchmarks/dtl.py --parts memory``."""
    return " ".join([f"python benchmarks/{script}", *(argv if argv is not None else sys.argv[1:])])


def run_meta(script: str, argv=None, dtype: str = "float32", device="cpu", **extra) -> dict:
    """What a result was measured with: the caller's settings, then dtype, device (on CUDA named by the driver, e.g.
    ``cuda: NVIDIA H200``), threads, torch, command."""
    import torch

    dev = torch.device(device)
    name = f"cuda: {torch.cuda.get_device_name(dev)}" if dev.type == "cuda" else dev.type
    return {
        **extra,
        "dtype": str(dtype).replace("torch.", ""),
        "device": name,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "command": command(script, argv),
    }


def save(name: str, data: dict, lines: list[str], out: Path = OUT) -> None:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.md`` (``out``: ``benchmarks/results``) and print the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / f"{name}.md").write_text("\n".join(lines).rstrip("\n") + "\n")
    print("\n".join(lines))


def load(name: str) -> dict:
    """An earlier result of the same script (for scripts that rerun only some parts), or an empty one."""
    path = OUT / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}
