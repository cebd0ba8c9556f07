"""Data: the VTAB-1K folder reader and the synthetic task generator."""

from .vtab import ImageDataset, batches, infer_num_classes, load_split, normalize, read_list

__all__ = ["ImageDataset", "batches", "infer_num_classes", "load_split", "normalize", "read_list"]
