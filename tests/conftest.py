import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

#: The tiny ViT of the tests (STYLE.md): img 32, patch 8, dim 32, depth 2.
TINY = "vit_tiny_patch16_224:img_size=32,patch_size=8,embed_dim=32,depth=2,num_heads=2"
#: Small Swin and ConvNeXt for the "every backbone family builds" checks.
TINY_SWIN = "swin_tiny_patch4_window7_224:img_size=32,window_size=4,embed_dim=16,depths=[1,1],num_heads=[1,2]"
TINY_CONVNEXT = "convnext_atto:dims=[8,16,32,64],depths=[1,1,1,1]"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """Synthetic tasks (count, shapes), 800/200/200 images of 32 px, generated once per session."""
    from vpeft.data.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, ["count", "shapes"], seed=0, n_test=200)
    return root


def make_task(root: Path, n_train: int = 24, n_test: int = 12, num_classes: int = 3, size: int = 16) -> Path:
    """A small task folder in the VTAB-1K layout with random images (for error-path tests)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    lists = {}
    for split, n in (("train800", n_train), ("val200", n_train // 2), ("test", n_test)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(n):
            rel = f"images/{split}/{i:04d}.png"
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / rel)
            lines.append(f"{rel} {i % num_classes}")
        lists[split] = lines
    lists["train800val200"] = lists["train800"] + lists["val200"]
    for split, lines in lists.items():
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def small_task(tmp_path) -> Path:
    return make_task(tmp_path / "task")


def install_plugin(monkeypatch, folder: Path, modules: dict, registry, entry_points: str = "") -> Path:
    """What ``pip install`` of a plug-in package leaves, in ``folder``: its modules (name -> source) on ``sys.path``
    and a dist-info whose ``entry_points.txt`` holds ``entry_points`` (returned, to write later). ``registry`` reads
    its entry points again and is restored after the test, and so is ``sys.modules``."""
    import sys
    import textwrap

    folder.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.delitem(sys.modules, name, raising=False)
    info = folder / f"{next(iter(modules))}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {next(iter(modules))}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(registry, "_registered", dict(registry._registered))
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_error", None)
    return info / "entry_points.txt"


def tiny_sam_reference(seed=None):
    """segment-anything's own ``Sam`` in ``sam:tiny``'s configuration (random init, eval mode): the reference the SAM
    family's tests compare with; with ``seed``, every tensor drawn from N(0, 0.5^2) (none left at zero). Needs the sam
    extra."""
    from functools import partial

    import torch
    from segment_anything import modeling as m

    sam = m.Sam(
        image_encoder=m.ImageEncoderViT(
            img_size=64,
            patch_size=8,
            embed_dim=32,
            depth=2,
            num_heads=2,
            mlp_ratio=4,
            out_chans=32,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=[1],
        ),
        prompt_encoder=m.PromptEncoder(
            embed_dim=32, image_embedding_size=(8, 8), input_image_size=(64, 64), mask_in_chans=16
        ),
        mask_decoder=m.MaskDecoder(
            num_multimask_outputs=3,
            transformer=m.TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=2),
            transformer_dim=32,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for v in sam.state_dict().values():
                v.copy_(torch.randn(v.shape, generator=g) * 0.5)
    return sam


def benchmark_script(name: str):
    """``benchmarks/<name>.py`` as a module, importable as ``python benchmarks/<name>.py`` runs it (the scripts import
    ``_common`` from their folder)."""
    import importlib.util
    import sys

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(bench) not in sys.path:
        sys.path.insert(0, str(bench))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", bench / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
