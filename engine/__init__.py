"""xmc-lab engine: output layers for extreme multi-label classification.

Data and metrics, the heads (dense, fixed fan-in, group-shared, MACH) with numba CPU and CUDA
kernels, label groups, dynamic sparse training, learned-hash inference, and training as a
generator of records kept in a run store. The CLI is `python -m engine`.
"""

from .config import (HEADS, PRESETS, SETTINGS, SPARSE_HEADS, DenseSettings, DenseSparseSettings, FixedFaninSettings,
                     GroupSharedSettings, HeadSettings, MachSettings, ModelConfig, ModelSettings, TrainConfig, used_by)
from .data import (GENERATOR_PRESETS, Dataset, GeneratorConfig, generate, load_dataset, read_xc, resolve_dataset,
                   save_dataset, write_xc)
from .data.registry import fetched_datasets
from .device import DEVICES, Placement, gpu_status, resolve_device
from .dst import DSTConfig, DynamicSparsity, index_history
from .errors import (CheckpointError, ConfigError, DatasetFormatError, DeviceError, DivergenceError, FetchError, RunNotFoundError,
                     RunWriteError, XMCError)
from .guard import MemoryBudgetError, check_bytes, check_memory
from .grouping import LabelGroups, balanced_groups, group_index, pifa, random_groups
from .heads import DenseHead, GroupSharedHead, MachHead, group_shared_linear
from .heads.group_shared import get_backend
from .label_report import label_report, label_scores, nearest_labels
from .layer_view import LAYERS, forward_reads, small_layer
from .lss import LearnedHashIndex, compare_hash_indexes
from .memory import estimate_bytes, head_memory, head_params, label_map_bytes
from .metrics import evaluate, inv_propensity, propensity
from .model import XMCModel
from .runs import Run, RunStore
from .tail import PROPENSITY_CONSTANTS, frequency_bins, predict_run, tail_by_frequency
from .train import Trainer
from .bench.heads import run_heads_bench              # a driver: the app's micro-benchmark
from .bench.peers import PEER_RESULTS_FILE, read_peer_results     # a driver's output: the Compare page's peers

__all__ = [
    "forward_reads", "index_history", "label_report", "label_scores", "LAYERS", "nearest_labels", "small_layer",
    "balanced_groups", "check_bytes", "check_memory", "CheckpointError", "compare_hash_indexes", "ConfigError", "Dataset",
    "DatasetFormatError", "DenseHead", "DEVICES", "DeviceError", "gpu_status", "Placement", "resolve_device", "DenseSettings", "DenseSparseSettings", "FixedFaninSettings", "DivergenceError", "DSTConfig", "DynamicSparsity", "estimate_bytes",
    "evaluate", "fetched_datasets", "FetchError", "generate", "GENERATOR_PRESETS", "GeneratorConfig", "get_backend", "group_index",
    "group_shared_linear", "GroupSharedHead", "GroupSharedSettings", "HeadSettings", "head_memory", "head_params", "label_map_bytes", "HEADS", "inv_propensity",
    "LabelGroups", "LearnedHashIndex", "load_dataset", "MachHead", "MachSettings", "MemoryBudgetError", "ModelConfig",
    "ModelSettings", "pifa", "PRESETS", "propensity", "random_groups", "read_xc", "resolve_dataset", "Run",
    "PEER_RESULTS_FILE", "read_peer_results", "run_heads_bench", "RunNotFoundError", "RunStore", "RunWriteError", "save_dataset", "SETTINGS", "SPARSE_HEADS", "TrainConfig",
    "Trainer", "used_by", "PROPENSITY_CONSTANTS", "frequency_bins", "predict_run", "tail_by_frequency", "write_xc", "XMCError", "XMCModel",
]
