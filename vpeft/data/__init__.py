"""Data: the VTAB-1K folder reader, device batches (``loader``), batched augmentation (``augment``) and the synthetic
task generator."""

from .loader import DeviceData
from .vtab import ImageDataset, infer_num_classes, load_split, normalize, read_list

__all__ = ["DeviceData", "ImageDataset", "infer_num_classes", "load_split", "normalize", "read_list"]
