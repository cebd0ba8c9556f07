"""Data: the VTAB-1K folder reader, device batches (``loader``), batched augmentation (``augment``) and the synthetic
task generator."""

from .entries import infer_num_classes, read_list
from .loader import DeviceData
from .vtab import ImageDataset, load_split, normalize

__all__ = ["DeviceData", "ImageDataset", "infer_num_classes", "load_split", "normalize", "read_list"]
