"""Batched augmentation (vpeft/data/augment.py) against the per-image torchvision loops it replaces
(``vtab.augment_batch``, GPS's ``two_views``): time per image of a batch of uint8 decodes (256 px cropped to 224 px,
and 37 px to 32 px as the tests' and demo's images).

Writes benchmarks/results/augment.{json,md}.

    .venv/bin/python benchmarks/augment.py [--device cpu] [--threads 1] [--batch-size 64] [--sizes 256:224,37:32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import run_meta, save

from vpeft.data import augment as A
from vpeft.selectors.gps import two_views


# The per-image torchvision v2 pipeline the trainer ran before (vtab.augment_batch), kept as the baseline.
def augment_batch(images, size, kind):
    from torchvision.transforms import v2

    ops = [v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    if kind == "crop_flip_randaug":
        ops.append(v2.RandAugment(num_ops=2, magnitude=9))
    t = v2.Compose(ops)
    return torch.stack([t(img) for img in images])


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--sizes", default="256:224,37:32", help="decoded side:crop side, comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device, b = torch.device(args.device), args.batch_size
    rows = []
    for pair in args.sizes.split(","):
        decode, size = (int(v) for v in pair.split(":"))
        coarse = torch.randint(
            0,
            256,
            (b, 3, max(2, decode // 8), max(2, decode // 8)),
            dtype=torch.uint8,
            generator=torch.Generator().manual_seed(0),
        )
        x_cpu = torch.nn.functional.interpolate(coarse.float(), size=decode, mode="bilinear").round().to(torch.uint8)
        x = x_cpu.to(device)
        g = torch.Generator().manual_seed(0)
        cases = {  # name: (old per-image loop on the CPU, new batched on the device)
            "crop_flip": (
                lambda: augment_batch(x_cpu, (size, size), "crop_flip"),
                lambda: A.augment(x, size, "crop_flip", g),
            ),
            "crop_flip_randaug": (
                lambda: augment_batch(x_cpu, (size, size), "crop_flip_randaug"),
                lambda: A.augment(x, size, "crop_flip_randaug", g),
            ),
            "gps_views (2 per image)": (lambda: two_views(x_cpu, (size, size)), lambda: A.gps_views(x, size, g)),
        }
        for name, (old, new) in cases.items():
            t_old = timed(old, torch.device("cpu"), args.repeats) / b * 1e3
            t_new = timed(new, device, args.repeats) / b * 1e3
            rows.append(
                {
                    "augment": name,
                    "decode": decode,
                    "size": size,
                    "old_ms_per_image": t_old,
                    "new_ms_per_image": t_new,
                    "speedup": t_old / t_new,
                }
            )
            print(rows[-1])
    data = {"meta": run_meta("augment.py", argv, device=str(device), batch_size=b, repeats=args.repeats), "rows": rows}
    lines = [
        f"# Batched augmentation against the per-image torchvision loop ({data['meta']['device']}, "
        f"{args.threads} thread(s), batch {b})",
        "",
        f"Command: `{data['meta']['command']}`. Milliseconds per image, median of {args.repeats} batches after "
        "a warm-up; old = the torchvision v2 pipeline per image on the CPU (what `vtab.augment_batch` and GPS's "
        "`two_views` did), new = `vpeft.data.augment` on the device.",
        "",
        "| augmentation | decode px | crop px | old ms/image (CPU) | new ms/image | speed-up |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['augment']} | {r['decode']} | {r['size']} | {r['old_ms_per_image']:.3f} | "
            f"{r['new_ms_per_image']:.3f} | {r['speedup']:.2f}x |"
        )
    save("augment", data, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
