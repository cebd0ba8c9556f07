"""Streaming evaluation of a run's test split: a split larger than ``data.eval_memory_mb`` decoded is read a chunk at
a time each time it is evaluated. Same batches, same accuracy and same model selection as in memory; never more
than one chunk decoded; bad lines named by file and line."""

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, make_task

import vpeft.data.sources as sources
import vpeft.data.vtab as vtab
from vpeft.config import DataConfig, RunConfig, run_identity
from vpeft.data.loader import DeviceData, StreamedData
from vpeft.data.sources import load, streamed
from vpeft.engine.trainer import train
from vpeft.errors import DataError

PER_IMAGE = 3 * 32 * 32  # uint8 bytes of one test image at the tiny model's 32 px
SMALL_MB = 3 * PER_IMAGE / 2**20  # room for 3 decoded images: 12 test images in 4 chunks


@pytest.fixture
def task(tmp_path) -> Path:
    return make_task(tmp_path / "task", n_train=16, n_test=13, num_classes=3)


def _cfg(root: Path, eval_mb: float, **train) -> RunConfig:
    return RunConfig.from_dict(
        {
            "backbone": {"spec": TINY},
            "method": "bitfit",
            "data": {"root": str(root), "train_split": "train800", "eval_memory_mb": eval_mb},
            "train": {"epochs": 2, "batch_size": 4, "eval_batch_size": 5, "device": "cpu", **train},
        }
    )


def test_a_split_that_fits_is_not_streamed_and_one_that_does_not_is(task):
    dc = DataConfig(root=str(task), eval_memory_mb=13 * PER_IMAGE / 2**20)
    assert streamed(dc, "test", (32, 32), 3) is None
    s = streamed(DataConfig(root=str(task), eval_memory_mb=SMALL_MB), "test", (32, 32), 3)
    assert len(s) == 13 and s.chunk == 3 and s.crop is None and s.decode_size == (32, 32)
    # Augmented layouts decode larger (size / 0.875) and evaluate the centre crop, as the in-memory split.
    s = streamed(DataConfig(root=str(task), augment="crop_flip", eval_memory_mb=SMALL_MB), "test", (32, 32), 3)
    assert s.decode_size == (37, 37) and s.crop == (32, 32) and s.chunk == 2  # 3 * 37 * 37 bytes an image


@pytest.mark.parametrize("augment", ["none", "crop_flip"])
def test_streamed_batches_equal_the_in_memory_ones_across_chunk_borders_and_shards(task, augment):
    dc = DataConfig(root=str(task), augment=augment, eval_memory_mb=SMALL_MB)
    whole = DeviceData(load(dc, "test", (32, 32), 3, training=False), "cpu")
    stream = StreamedData(streamed(dc, "test", (32, 32), 3), "cpu")
    for shard in ((0, 1), (1, 2)):
        a = list(whole.batches(5, shard=shard))
        b = list(stream.batches(5, shard=shard))
        assert [n for *_, n in a] == [n for *_, n in b] == [5, 5, 3]
        for (xa, ya, _), (xb, yb, _) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(ValueError, match="evaluation only"):
        next(stream.batches(5, order=torch.arange(13)))


def test_a_streamed_run_gives_the_in_memory_run_and_decodes_at_most_a_chunk(task, tmp_path, monkeypatch):
    whole = train(_cfg(task, 1024.0, select="best-test"), tmp_path / "whole", progress=False)
    chunks, loaded = [], []
    decode = vtab.decode_chunks

    def recording(entries, image_root, size, chunk, skipped=None):
        for images, part in decode(entries, image_root, size, chunk, skipped):
            chunks.append(images.numel() * images.element_size())
            yield images, part

    real_load = sources.load_split
    monkeypatch.setattr(vtab, "decode_chunks", recording)
    monkeypatch.setattr(
        sources, "load_split", lambda root, split, *a, **k: loaded.append(split) or real_load(root, split, *a, **k)
    )
    cfg = _cfg(task, SMALL_MB, select="best-test")
    part = train(cfg, tmp_path / "part", progress=False)
    assert "test" not in loaded and "train800" in loaded  # the test split was never decoded whole
    assert chunks and max(chunks) <= SMALL_MB * 2**20  # at most one chunk of eval_memory_mb at a time
    assert len(chunks) == 3 * 5  # 13 images in chunks of 3, read at both epochs (best-test) and for the final test
    for key in ("test_acc", "test_correct", "test_total", "selected_epoch"):
        assert part[key] == whole[key], key
    logs = [(tmp_path / d / "log.jsonl").read_text().splitlines() for d in ("part", "whole")]
    accs = [[json.loads(line).get("test_acc") for line in log] for log in logs]
    assert accs[0] == accs[1] and None not in accs[0]  # every epoch's selection-split accuracy
    assert part["test_streamed"] == {"images": 13, "chunk_images": 3} and "test_streamed" not in whole
    assert run_identity(cfg.to_dict()) == run_identity(_cfg(task, 1024.0, select="best-test").to_dict())


def test_bad_lines_of_a_streamed_split_are_named_or_skipped(task, tmp_path):
    lines = (task / "test.txt").read_text().splitlines()
    (task / "images" / "test" / "0003.png").unlink()
    with pytest.raises(DataError, match=r"test.txt:4: image .*0003.png does not exist"):
        streamed(DataConfig(root=str(task), eval_memory_mb=SMALL_MB), "test", (32, 32), 3)
    (task / "images" / "test" / "0003.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"test.txt:4: cannot read image .*0003.png"):
        list(streamed(DataConfig(root=str(task), eval_memory_mb=SMALL_MB), "test", (32, 32), 3).chunks())
    (task / "test.txt").write_text("\n".join(lines + ["images/test/0000.png 7"]) + "\n")
    with pytest.raises(DataError, match=r"test.txt:14: label 7 is outside the class range 0..2"):
        streamed(DataConfig(root=str(task), eval_memory_mb=SMALL_MB), "test", (32, 32), 3)
    base = _cfg(task, SMALL_MB).to_dict()
    cfg = RunConfig.from_dict({**base, "data": {**base["data"], "skip_bad": True, "num_classes": 3}})
    with pytest.warns(UserWarning, match="skip_bad"):
        r = train(cfg, tmp_path / "r", progress=False)
    assert r["test_total"] == 12 and r["skipped_lines"]["test"] == 2  # the label out of range and the broken image


def test_real_valued_targets_stream_as_they_load(tmp_path):
    """Task ``regress``: float targets, read by the streamed split as by the in-memory one."""
    root = make_task(tmp_path / "reg", n_train=8, n_test=7)
    lines = (root / "test.txt").read_text().splitlines()
    (root / "test.txt").write_text(
        "".join(f"{line.rsplit(maxsplit=1)[0]} {0.25 * i - 0.5}\n" for i, line in enumerate(lines))
    )
    dc = DataConfig(root=str(root), eval_memory_mb=SMALL_MB)
    whole = DeviceData(load(dc, "test", (32, 32), None, training=False, labels="float"), "cpu")
    stream = StreamedData(streamed(dc, "test", (32, 32), None, labels="float"), "cpu")
    (xa, ya, _), (xb, yb, _) = next(whole.batches(7)), next(stream.batches(7))
    assert yb.dtype == torch.float32 and torch.equal(ya, yb) and torch.equal(xa, xb)
    assert yb.tolist() == [0.25 * i - 0.5 for i in range(7)]
