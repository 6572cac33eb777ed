"""xmc-lab engine: output layers for extreme multi-label classification.

Data and metrics, the heads (dense, fixed fan-in, group-shared, MACH) with numba CPU and CUDA
kernels, label groups, dynamic sparse training, learned-hash inference, and training as a
generator of records kept in a run store. The CLI is `python -m engine`.
"""

from .data import Dataset, generate, load_dataset, read_xc, save_dataset, write_xc
from .dst import DSTConfig, DynamicSparsity
from .errors import (CheckpointError, ConfigError, DatasetFormatError, DivergenceError, RunNotFoundError,
                     XMCError)
from .guard import MemoryBudgetError, check_memory, estimate_bytes
from .grouping import LabelGroups, balanced_groups, group_index, pifa, random_groups
from .heads import DenseHead, GroupSharedHead, MachHead, group_shared_linear
from .lss import LearnedHashIndex
from .memory import head_memory
from .metrics import evaluate, inv_propensity, propensity
from .config import HEADS, SPARSE_HEADS, ModelConfig, ModelSettings, TrainConfig
from .model import XMCModel
from .runs import Run, RunStore
from .train import Trainer

__all__ = [
    "CheckpointError", "ConfigError", "DSTConfig", "DivergenceError", "MemoryBudgetError", "Dataset", "DatasetFormatError", "DenseHead", "DynamicSparsity",
    "GroupSharedHead", "HEADS", "ModelSettings", "SPARSE_HEADS", "LabelGroups", "LearnedHashIndex", "MachHead", "ModelConfig", "Run",
    "RunNotFoundError", "RunStore", "TrainConfig", "Trainer", "XMCError", "XMCModel", "balanced_groups", "check_memory", "estimate_bytes", "evaluate",
    "generate", "group_index", "group_shared_linear", "head_memory", "inv_propensity",
    "load_dataset", "pifa", "propensity", "random_groups", "read_xc", "save_dataset", "write_xc",
]
