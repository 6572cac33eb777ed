"""xmc-lab engine: sparse output layers for extreme multi-label classification, on the CPU (numba)."""

from .data import Dataset, generate, load_dataset, read_xc, save_dataset, write_xc
from .errors import ConfigError, DatasetFormatError, XMCError
from .heads import DenseHead, GroupSharedHead, group_shared_linear
from .metrics import evaluate, propensity
from .model import ModelConfig, XMCModel
from .runs import Run, RunStore
from .train import TrainConfig, Trainer

__all__ = [
    "ConfigError", "Dataset", "DatasetFormatError", "DenseHead", "GroupSharedHead", "ModelConfig",
    "Run", "RunStore", "TrainConfig", "Trainer", "XMCError", "XMCModel", "evaluate", "generate",
    "group_shared_linear", "load_dataset", "propensity", "read_xc", "save_dataset", "write_xc",
]
