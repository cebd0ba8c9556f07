"""vpeft: parameter-efficient transfer learning for pretrained models (timm image backbones, SAM, CLIP, text).

Public API::

    backbone = vpeft.create_backbone("vit_base_patch16_224", num_classes=100, checkpoint="ViT-B_16.npz")
    vpeft.apply_method(backbone, "bitfit")
    vpeft.trainable_state_dict(backbone)   # only what trains
"""

from .backbones import Backbone, create_backbone
from .catalog import FAMILIES, FORMATS, METHODS, OBJECTIVES, SELECTORS  # built-in plug-ins, then entry points
from .config import RunConfig
from .engine.checkpoint import load_trainable, save_trainable, trainable_state_dict
from .errors import CheckpointError, ConfigError, DataError, RunDirError, VpeftError
from .measure import measure
from .methods import apply_method, merge
from .methods.merge import load_merged
from .multitask import MultiTask
from .version import __version__  # noqa: F401  (the package version)

__all__ = [
    "Backbone",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "FAMILIES",
    "FORMATS",
    "METHODS",
    "MultiTask",
    "OBJECTIVES",
    "RunConfig",
    "RunDirError",
    "SELECTORS",
    "VpeftError",
    "apply_method",
    "create_backbone",
    "load_trainable",
    "load_merged",
    "measure",
    "merge",
    "save_trainable",
    "trainable_state_dict",
]
