"""Predictions on new images from a trained run or a merged model (``vpeft predict``).

A :class:`Predictor` holds a model, the preprocessing it was trained with (:class:`Preprocess`: the run's input size,
the layout's resize and centre crop, the normalisation, exactly as ``vpeft eval`` prepares a test split) and the
class names where the data has them. :meth:`Predictor.from_run` rebuilds any run (every method, objective and
selector); :meth:`Predictor.from_merged` reads a file written by ``vpeft merge``, whose metadata carries the same.
A classification run predicts its top-k classes with their probabilities; another task (``regress``) its value; a
segmentation run (``segment``) a mask per image at the image's own size (:meth:`Predictor.masks`, written as PNGs by
:func:`write_masks`). A text run predicts lines of a text file (:func:`read_texts`, :meth:`Predictor.predict_texts`).
:func:`predict_multitask` keeps the shared-trunk mode of several DTL runs (:class:`~vpeft.multitask.MultiTask`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from .catalog import TASKS
from .config import DataConfig
from .data.entries import IMAGE_SUFFIXES
from .data.sources import augment_kind, data_class_names, decode_size
from .data.vtab import NORMALIZATION, _decode, crop_center, decode_mask
from .errors import CheckpointError, ConfigError, DataError
from .methods.merge import load_merged, read_merged_metadata
from .multitask import MultiTask
from .run import amp_context, load_run, read_run_config
from .rundir import RunDir
from .seg_prompts import ground_truth
from .spec import spec_string
from .tasks.classify import ClassifyConfig


@dataclass(frozen=True)
class Preprocess:
    """How a model takes an image file: decoded to RGB, resized (``interpolation``) to ``resize``, cropped at the
    centre to ``input_size`` (``crop="center"``; ``none``: the resize is the input size), scaled to [0, 1] and
    normalised by ``mean`` and ``std``. Sizes are ``(height, width)``."""

    input_size: tuple[int, int]
    resize: tuple[int, int]
    crop: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    normalize: str = "inception"
    interpolation: str = "bicubic"

    @classmethod
    def of_data(cls, dc: DataConfig, input_size: tuple[int, int]) -> Preprocess:
        """A run's preprocessing: its data section ``dc`` and the model's ``input_size`` (``data.img_size`` wins)."""
        size = (dc.img_size, dc.img_size) if dc.img_size else tuple(input_size)
        mean, std = NORMALIZATION[dc.normalize]
        return cls(
            input_size=size,
            resize=decode_size(dc, size),
            crop="none" if augment_kind(dc) == "none" else "center",
            mean=mean,
            std=std,
            normalize=dc.normalize,
        )

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(
            **{
                **d,
                "input_size": tuple(d["input_size"]),
                "resize": tuple(d["resize"]),
                "mean": tuple(d["mean"]),
                "std": tuple(d["std"]),
            }
        )

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def read(self, path: Path) -> torch.Tensor:
        """One image file as uint8 ``[3, H, W]`` at the input size; an unreadable file is a :class:`DataError`
        naming it."""
        if self.interpolation != "bicubic":
            raise ConfigError(f"interpolation {self.interpolation!r}: only bicubic (vpeft's decoding) is supported")
        try:
            image = torch.from_numpy(_decode(Path(path), self.resize))
        except Exception as e:
            raise DataError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
        return crop_center(image, self.input_size)

    def batch(self, paths: list[Path], device="cpu") -> torch.Tensor:
        """Images as the model takes them: normalised float32 ``[B, 3, H, W]`` on ``device``, as
        :func:`vpeft.data.vtab.normalize` prepares a test split."""
        images = torch.stack([self.read(p) for p in paths]).to(device)
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        return (images.float() / 255.0 - mean) / std


def image_files(items: list[str | Path]) -> list[Path]:
    """The image files named by ``items``: files as given, folders searched recursively for files with an image
    suffix (hidden files and folders left out), in sorted order. A missing path or a folder without images is a
    :class:`DataError`."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and f.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not found:
                raise DataError(f"folder {p} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out.extend(found)
        else:
            raise DataError(f"no such image file or folder: {p}")
    return out


def read_texts(path: str | Path) -> list[tuple[str, ...]]:
    """Examples to predict from a text file, one per line (UTF-8): a text, or two texts separated by a tab for a
    sentence-pair task (RTE, MRPC, STS-B, ...). A blank line or one of more than two fields is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such text file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}): save it as UTF-8") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = tuple(line.split("\t"))
        if not line.strip() or len(fields) > 2 or not all(f.strip() for f in fields):
            raise DataError(
                f"{path}, line {n}: expected one text, or two texts separated by one tab, got {line[:80]!r}"
            )
        out.append(fields)
    if not out:
        raise DataError(f"{path} holds no texts (one example per line)")
    return out


def run_class_names(run_dir: str | Path, cfg=None, num_classes: Optional[int] = None) -> Optional[list[str]]:
    """A run's class names: those its ``result.json`` recorded, else its data's (:func:`data_class_names`)."""
    recorded = (RunDir(run_dir).read_result() or {}).get("class_names")
    if recorded:
        return list(recorded)
    cfg = cfg if cfg is not None else read_run_config(run_dir)
    return data_class_names(cfg.data, num_classes) if isinstance(cfg.task, ClassifyConfig) else None


def run_info(run_dir: str | Path, cfg, input_size: tuple[int, int], num_classes: Optional[int] = None) -> dict:
    """What a merged model of a run records beside its weights (``vpeft merge``): ``task`` (its spec),
    ``class_names`` (None where the data has none) and ``preprocess`` (:meth:`Preprocess.to_dict`)."""
    names = run_class_names(run_dir, cfg, num_classes) if isinstance(cfg.task, ClassifyConfig) else None
    return {
        "task": spec_string(cfg.task),
        "class_names": names,
        "preprocess": Preprocess.of_data(cfg.data, input_size).to_dict(),
    }


class Predictor:
    """A model ready to predict on image files.

    Args:
        forward: Normalised images ``[B, 3, H, W]`` to the model's outputs.
        preprocess: How an image file becomes the model's input.
        task: The task config (``classify``: top-k classes with probabilities; another task: its
            :meth:`~vpeft.tasks.base.Task.predict` values).
        class_names: Names in label order; None: classes are printed as numbers.
        device: Where the model runs.
        amp: The run's autocast (``none``, ``bf16``, ``fp16``; CUDA only).
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        preprocess: Optional[Preprocess],
        task,
        class_names: Optional[list[str]] = None,
        device: str | torch.device = "cpu",
        amp: str = "none",
        encode: Optional[Callable[[list], torch.Tensor]] = None,
    ):
        self.forward, self.preprocess, self.task_cfg = forward, preprocess, task
        self.task = task.build(preprocess.normalize) if preprocess is not None else task.build()
        self.class_names, self.device, self.amp = class_names, torch.device(device), amp
        #: A text run's tokenizer (texts -> token ids, formatted as the run's data were); None for an image model.
        self.encode = encode

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu") -> Predictor:
        """The trained model of a run directory, with the run's preprocessing (a text run: its tokenizer and
        formatting) and class names."""
        model, objective, cfg, num_classes = load_run(run_dir, device=device)
        names = run_class_names(run_dir, cfg, num_classes) if isinstance(cfg.task, ClassifyConfig) else None
        if cfg.task.inputs == "text":
            encode = cfg.task.text_encoder(model, cfg.data)
            return cls(lambda x: objective.predict(model, x), None, cfg.task, names, device, cfg.train.amp, encode)
        prep = Preprocess.of_data(cfg.data, model.input_size)
        return cls(lambda x: objective.predict(model, x), prep, cfg.task, names, device, cfg.train.amp)

    @classmethod
    def from_merged(cls, path: str | Path, device: str = "cpu") -> Predictor:
        """A file written by ``vpeft merge`` with the preprocessing and class names in its metadata."""
        meta = read_merged_metadata(path)
        task = TASKS.build(meta.get("task") or "classify")
        if task.inputs == "text":
            raise ConfigError(
                f"{path} is a merged text model: vpeft predict reads texts from the run itself (--run RUN --texts "
                "FILE); load the merged file in Python with vpeft.load_merged"
            )
        if "preprocess" not in meta:
            raise CheckpointError(
                f"{path} records no preprocessing (written by an older 'vpeft merge'): merge the "
                "run again, or predict with --run"
            )
        model = load_merged(path).to(device)
        return cls(
            model,
            Preprocess.from_dict(meta["preprocess"]),
            task,
            meta.get("class_names"),
            device,
        )

    def class_name(self, label: int) -> str | int:
        return self.class_names[label] if self.class_names else label

    @torch.no_grad()
    def outputs(self, paths: list[Path], prompt_masks: Optional[list[Path]] = None) -> torch.Tensor:
        """The model's float32 outputs for image files, in one batch. ``prompt_masks``: a mask file per image (each
        at its image's size), from which a prompted model (SAM in prompt mode ``box`` or ``points``) draws the
        image's prompt; other models ignore them."""
        x = self.preprocess.batch(paths, self.device)
        masks = None
        if prompt_masks is not None:
            size = self.preprocess.input_size
            decoded = [decode_mask(Path(m), size, _size(p)) for p, m in zip(paths, prompt_masks)]
            masks = torch.from_numpy(np.stack(decoded)).to(x.device)
        with amp_context(self.device, self.amp), ground_truth(masks):
            return self.forward(x).float()

    def predict(
        self, paths: list[str | Path], batch_size: int = 32, top_k: int = 1, progress: bool = False
    ) -> Iterator[dict]:
        """One row per image, in order: ``{"image", "class", "label", "probability", "top_k": [{"class", "label",
        "probability"}, ...]}`` for classification (``class``: the name, or the label where the data has no names),
        ``{"image", "value"}`` for another task.

        Args:
            paths: Image files (see :func:`image_files` for folders).
            batch_size: Images per forward.
            top_k: Classes per image, most probable first (at most the number of classes).
            progress: Show a tqdm bar on stderr.
        """
        from tqdm.auto import tqdm

        if batch_size < 1 or top_k < 1:
            raise ConfigError(f"batch size and top-k must be >= 1, got {batch_size} and {top_k}")
        if self.encode is not None:
            raise ConfigError("this is a text model: predict texts with Predictor.predict_texts (--texts FILE)")
        paths = [Path(p) for p in paths]
        with tqdm(total=len(paths), desc="predict", unit="img", disable=not progress, file=sys.stderr) as bar:
            for start in range(0, len(paths), batch_size):
                chunk = paths[start : start + batch_size]
                if self.task_cfg.name == "segment":
                    raise ConfigError(
                        "a segment run predicts a mask per image: use Predictor.masks, or write_masks for PNG files"
                    )
                yield from self._rows("image", [str(p) for p in chunk], self.outputs(chunk), top_k)
                bar.update(len(chunk))

    def _rows(self, key: str, items: list, out: torch.Tensor, top_k: int) -> Iterator[dict]:
        """Prediction rows of a batch's outputs: top-k classes with probabilities, or the task's value."""
        if isinstance(self.task_cfg, ClassifyConfig):  # clip_classify and the text classifiers too
            probs = out.softmax(-1)
            p, idx = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
            for item, pj, ij in zip(items, p.tolist(), idx.tolist()):
                top = [{"class": self.class_name(i), "label": i, "probability": q} for i, q in zip(ij, pj)]
                yield {key: item, **top[0], "top_k": top}
        else:
            for item, v in zip(items, self.task.predict(out).tolist()):
                yield {key: item, "value": v}

    @torch.no_grad()
    def predict_texts(
        self, texts: list[tuple[str, ...]], batch_size: int = 32, top_k: int = 1, progress: bool = False
    ) -> Iterator[dict]:
        """One row per example of a text run, in order: ``{"text", "class", "label", "probability", "top_k"}`` for
        a classifier, ``{"text", "value"}`` for a regression (STS-B: the score); ``text`` is the example's texts
        joined by a tab. Each example is one text or a pair (:func:`read_texts`), formatted and tokenised as the
        run's data were (ATTEMPT's "sentence1: ... sentence2: ..." for T5)."""
        from tqdm.auto import tqdm

        if self.encode is None:
            raise ConfigError("this model reads images: predict image files with Predictor.predict (--images)")
        if batch_size < 1 or top_k < 1:
            raise ConfigError(f"batch size and top-k must be >= 1, got {batch_size} and {top_k}")
        with tqdm(total=len(texts), desc="predict", unit="text", disable=not progress, file=sys.stderr) as bar:
            for start in range(0, len(texts), batch_size):
                chunk = [tuple(t) for t in texts[start : start + batch_size]]
                ids = self.encode(chunk).to(self.device)
                with amp_context(self.device, self.amp):
                    out = self.forward(ids).float()
                yield from self._rows("text", ["\t".join(t) for t in chunk], out, top_k)
                bar.update(len(chunk))

    def masks(
        self,
        paths: list[str | Path],
        batch_size: int = 32,
        progress: bool = False,
        prompt_masks: Optional[list[str | Path]] = None,
    ) -> Iterator[tuple[Path, np.ndarray]]:
        """A segmentation run's mask of each image file, in order: ``(path, mask)``, the mask uint8 ``[H, W]`` of 0
        and 1 at the image file's own size: the model's thresholded prediction (``sigmoid > 0.5``) at its input
        size, resized back with nearest neighbour (no new value appears). ``prompt_masks``: a mask file per image
        for a prompted model to draw its box or point from (see :meth:`outputs`)."""
        from tqdm.auto import tqdm

        if self.task_cfg.name != "segment":
            raise ConfigError(f"masks are predicted by a segment run; this one's task is {self.task_cfg.name!r}")
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        paths = [Path(p) for p in paths]
        if prompt_masks is not None and len(prompt_masks) != len(paths):
            raise ConfigError(f"{len(prompt_masks)} prompt masks for {len(paths)} images: give one per image")
        with tqdm(total=len(paths), desc="predict", unit="img", disable=not progress, file=sys.stderr) as bar:
            for start in range(0, len(paths), batch_size):
                chunk = paths[start : start + batch_size]
                prompts = prompt_masks[start : start + batch_size] if prompt_masks is not None else None
                predicted = self.task.predict(self.outputs(chunk, prompts)).cpu().numpy()
                for path, mask in zip(chunk, predicted):
                    with Image.open(path) as img:
                        size = img.size  # (width, height), as the image was read
                    if (mask.shape[1], mask.shape[0]) != size:
                        mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST), dtype=np.uint8)
                    yield path, mask
                bar.update(len(chunk))


def _size(path: Path) -> tuple[int, int]:
    """An image file's (width, height)."""
    with Image.open(path) as img:
        return img.size


def prompt_mask_files(images: list[Path], folder: str | Path) -> list[Path]:
    """Each image's mask in ``folder``: the file with the image's stem (any of the mask suffixes a ``segfolder``
    reads). An image without one, or with two, is a :class:`DataError` naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"prompt mask folder {folder} does not exist")
    by_stem: dict[str, list[Path]] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file():
            by_stem.setdefault(f.stem, []).append(f)
    out = []
    for image in images:
        found = by_stem.get(image.stem, [])
        if len(found) != 1:
            what = "no mask" if not found else f"{len(found)} masks ({', '.join(f.name for f in found)})"
            raise DataError(f"image {image}: {what} named {image.stem}.* in the prompt mask folder {folder}")
        out.append(found[0])
    return out


def write_masks(
    predictor: Predictor,
    paths: list[str | Path],
    out: str | Path,
    batch_size: int = 32,
    progress: bool = False,
    prompt_masks: Optional[list[str | Path]] = None,
) -> Iterator[dict]:
    """Write a segmentation run's mask of each image into folder ``out`` as ``<image stem>.png`` (grey, 0 and 255, at
    the image's size; see :meth:`Predictor.masks`), one row per image as it is written: ``{"image", "mask",
    "foreground"}`` (the mask file and its share of foreground pixels, in percent). Two images with the same stem
    fail before anything is written (their masks would overwrite each other), naming both. ``prompt_masks``: a mask
    file per image, for a prompted model (:meth:`Predictor.outputs`)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file: a segment run writes one mask PNG per image into a folder")
    seen: dict[str, Path] = {}
    for p in map(Path, paths):
        if p.stem in seen:
            raise DataError(
                f"images {seen[p.stem]} and {p} share the stem {p.stem!r}: their masks would both be {out / p.stem}.png"
            )
        seen[p.stem] = p
    out.mkdir(parents=True, exist_ok=True)
    for path, mask in predictor.masks(list(seen.values()), batch_size, progress, prompt_masks):
        target = out / f"{path.stem}.png"
        Image.fromarray(mask * np.uint8(255)).save(target)  # grey (L): 0 and 255
        yield {"image": str(path), "mask": str(target), "foreground": 100.0 * float(mask.mean()) if mask.size else 0.0}


def predict_multitask(
    runs: list[str | Path], paths: list[Path], batch_size: int = 16, device: str = "cpu"
) -> Iterator[dict]:
    """Predictions of several DTL runs over one shared backbone trunk (:class:`~vpeft.multitask.MultiTask`): one row
    per image, ``{"image", "predictions": {run name: label}}``, plus ``"classes": {run name: class name}`` for runs
    whose data names its classes. The runs must preprocess their images alike."""
    mt = MultiTask(runs, device=device)
    cfgs = {run: read_run_config(run) for run in runs}
    preps = {run: Preprocess.of_data(c.data, mt.backbone.input_size) for run, c in cfgs.items()}
    if len(set(preps.values())) > 1:
        raise ConfigError(
            "runs preprocess their images differently (data.normalize / layout / img_size): "
            + "; ".join(f"{r}: {p.to_dict()}" for r, p in preps.items())
        )
    prep = preps[runs[0]]
    names = {name: run_class_names(run, cfgs[run]) for name, run in zip(mt.names, runs)}
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        outs = mt(prep.batch(chunk, device))
        for j, p in enumerate(chunk):
            preds = {name: int(o[j].argmax()) for name, o in zip(mt.names, outs)}
            row = {"image": str(p), "predictions": preds}
            classes = {n: names[n][i] for n, i in preds.items() if names[n] and i < len(names[n])}
            if classes:
                row["classes"] = classes
            yield row
