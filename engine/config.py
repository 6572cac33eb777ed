"""Every setting of a run, declared once: its default, its valid range, its help, its label.

    ModelSettings     what the network is: encoder widths, head, fan-in k, group size m, MACH's R × B
    ModelConfig       ModelSettings + the dataset's shape (n_features D, n_labels L): builds an XMCModel
    TrainConfig       ModelSettings + how to train it: data, label groups, DST, auxiliary loss, schedule

The CLI's `train` flags, the app's widgets and the checks of a config however it was made
(constructor, config.json, an import in the app) all come from these declarations: a field's
metadata holds its help, its label, its range (`low`/`high`, `above`/`below` for open ends) or
`choices`, the heads that use it (`heads`; the others ignore it and it is not checked) and, for
the app, the values a widget offers (`ui`: a (low, high) range or a list of options).
The defaults are the one recipe both front ends start from.
"""

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError

HEADS = ("dense", "fixed_fanin", "group_shared", "dense_sparse", "mach")
SPARSE_HEADS = ("fixed_fanin", "group_shared", "dense_sparse")
GROUPED_HEADS = ("group_shared", "dense_sparse")          # heads whose labels share input sets
BACKENDS = ("auto", "cpu", "cuda")


def setting(default, help, label=None, *, low=None, high=None, above=None, below=None, choices=None,
            heads=None, zero=None, ui=None):
    """A dataclass field with its metadata (see the module docstring); `zero` says what 0 means."""
    return field(default=default, metadata=dict(
        help=help, label=label, low=low, high=high, above=above, below=below, choices=choices,
        heads=heads, zero=zero, ui=ui))


def describe_range(meta):
    """'>= 1', 'in [0, 1)', '> 0', ... of a field's metadata."""
    def num(v):
        return f"{v:g}" if isinstance(v, float) else str(v)
    lo = (meta["low"], "[") if meta["low"] is not None else (meta["above"], "(")
    hi = (meta["high"], "]") if meta["high"] is not None else (meta["below"], ")")
    if lo[0] is not None and hi[0] is not None:
        return f"in {lo[1]}{num(lo[0])}, {num(hi[0])}{hi[1]}"
    if lo[0] is not None:
        return (">= " if lo[1] == "[" else "> ") + num(lo[0])
    return ("<= " if hi[1] == "]" else "< ") + num(hi[0])


def _coerce(config, f):
    """The field's value as its declared type (numpy scalars accepted), or ConfigError naming it."""
    v, kind = getattr(config, f.name), f.type
    is_bool = isinstance(v, (bool, np.bool_))
    if kind is bool:
        ok = is_bool
    elif kind is int:
        ok = isinstance(v, numbers.Integral) and not is_bool
    elif kind is float:
        ok = isinstance(v, numbers.Real) and not is_bool
        if ok and not math.isfinite(v):
            raise ConfigError(f"{f.name} must be a finite number, got {v!r}")
    else:
        ok = isinstance(v, kind)
    if not ok:
        raise ConfigError(f"{f.name} must be {'an' if kind is int else 'a'} {kind.__name__}, "
                          f"got {type(v).__name__} {v!r}")
    setattr(config, f.name, kind(v))


def _check_range(config, f):
    m, v = f.metadata, getattr(config, f.name)
    if m["choices"] is not None and v not in m["choices"]:
        raise ConfigError(f"{f.name} must be one of {m['choices']}, got {v!r}")
    bad = ((m["low"] is not None and v < m["low"]) or (m["high"] is not None and v > m["high"])
           or (m["above"] is not None and not v > m["above"]) or (m["below"] is not None and not v < m["below"]))
    if bad:
        note = f" ({m['zero']})" if m["zero"] else ""
        raise ConfigError(f"{f.name} must be {describe_range(m)}{note}, got {v}")


def used_by(head, name):
    """Whether `head` reads the setting `name` (settings of other heads are neither checked nor shown)."""
    heads = _FIELD_HEADS.get(name)
    return heads is None or head in heads


def validate_fields(config):
    """Types of every field, the choices of each, and the declared range of each field the head uses."""
    for f in dataclasses.fields(config):
        _coerce(config, f)
    for f in dataclasses.fields(config):
        if f.metadata and (f.metadata["choices"] is not None or used_by(config.head, f.name)):
            _check_range(config, f)


@dataclass
class ModelSettings:
    head: str = setting("group_shared", "output layer", "head", choices=HEADS)
    hidden: int = setting(512, "encoder width", "hidden width", low=0, zero="0 = no encoder: the head reads the features",
                          ui=[0, 64, 128, 256, 512])
    intermediate: int = setting(0, "penultimate layer width", "intermediate layer", low=0, zero="0 = none")
    fanin: int = setting(64, "k: inputs per label", "fan-in k", low=1, heads=SPARSE_HEADS, ui=(1, 512))
    group_size: int = setting(32, "m: labels sharing one set of k inputs", "group size m", low=1,
                              heads=GROUPED_HEADS, ui=(1, 256))
    head_size: int = setting(100, "labels in the dense part (the most frequent)", "dense labels", low=1,
                             heads=("dense_sparse",), ui=(1, 2000))
    mach_buckets: int = setting(256, "B: buckets per repetition", "buckets B", low=2, heads=("mach",),
                                ui=[16, 32, 64, 128, 256, 512, 1024])
    mach_reps: int = setting(4, "R: hash repetitions", "repetitions R", low=1, heads=("mach",), ui=(1, 16))
    mach_members: int = setting(1, "independent models (own encoders) the R repetitions form", "members",
                                low=1, heads=("mach",), zero="1 = one shared encoder", ui=(1, 16))
    dropout: float = setting(0.3, "dropout on the encoder's layers", "dropout", low=0.0, below=1.0, ui=(0.0, 0.9))
    backend: str = setting("auto", "kernel backend of the sparse heads", "backend", choices=BACKENDS)
    seed: int = setting(0, "seeds initialisation, index sets, hashes, batches", "seed", low=0, high=2**63 - 1,
                        ui=(0, 10**6))

    def __post_init__(self):
        validate_fields(self)


MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelSettings))


@dataclass
class ModelConfig(ModelSettings):
    """A model's settings on a dataset of n_features inputs and n_labels labels."""
    n_features: int = field(default=0, kw_only=True)
    n_labels: int = field(default=0, kw_only=True)
    aux_clusters: int = field(default=0, kw_only=True)   # label clusters of the auxiliary classifier; 0 = none

    def __post_init__(self):
        super().__post_init__()
        for name in ("n_features", "n_labels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden == 0 and self.intermediate:
            raise ConfigError(f"intermediate={self.intermediate} needs an encoder: hidden=0 means the head "
                              f"reads the input features")
        if self.head in SPARSE_HEADS and not 1 <= self.fanin <= self.head_in:
            raise ConfigError(f"fanin must be in [1, {self.head_in}] (the head's input width), got {self.fanin}")
        if self.head == "dense_sparse" and not 1 <= self.head_size < self.n_labels:
            raise ConfigError(f"head_size must be in [1, {self.n_labels - 1}] (labels in the dense part), "
                              f"got {self.head_size}")
        if self.head == "mach" and self.mach_reps % self.mach_members:
            raise ConfigError(f"mach_members must divide mach_reps={self.mach_reps} (1 = one shared encoder), "
                              f"got {self.mach_members}")
        if self.members > 1 and not self.hidden:
            raise ConfigError(f"mach_members={self.mach_members} (independent encoders) needs hidden >= 1")
        if self.members > 1 and (self.intermediate or self.aux_clusters):
            raise ConfigError(f"mach_members={self.mach_members} (independent encoders) takes no intermediate "
                              f"layer and no auxiliary objective")
        if not 0 <= self.aux_clusters <= self.n_labels:
            raise ConfigError(f"aux_clusters must be in [0, {self.n_labels}] (0 = none), got {self.aux_clusters}")

    @property
    def members(self):
        """Independent encoders side by side (MACH members; 1 for every other head)."""
        return self.mach_members if self.head == "mach" else 1

    @property
    def encoder_width(self):
        """Units of the encoder's hidden layer: hidden per member."""
        return self.hidden * self.members

    @property
    def head_in(self):
        """Width of the layer the head reads (the D features when there is no encoder)."""
        return self.intermediate or self.hidden or self.n_features

    @property
    def n_dense(self):
        """Labels in the dense part of the head (all of them for the dense head)."""
        return {"dense": self.n_labels, "dense_sparse": self.head_size}.get(self.head, 0)

    @property
    def group_labels(self):
        """Labels per group of the sparse part: m, or 1 for fixed fan-in."""
        return self.group_size if self.head in GROUPED_HEADS else 1


DST_MODES = ("none", "random", "gradient")


@dataclass
class TrainConfig(ModelSettings):
    """A run: the model's settings, the data, and how to train."""
    data: str = setting("sample", "dataset directory (XC format), or 'sample' for the bundled one", "dataset")
    groups: str = setting("random", "label groups: random, or clustered (balanced 2-means on PIFA)", "label groups",
                          choices=("random", "clustered"), heads=GROUPED_HEADS)
    index_init: str = setting("random", "a group's first inputs: random, or the k largest of its centroid",
                              "first inputs", choices=("random", "centroid"), heads=SPARSE_HEADS)
    aux: float = setting(0.0, "initial weight of the auxiliary cluster objective", "auxiliary weight", low=0.0,
                         zero="0 = off")
    aux_clusters: int = setting(64, "meta-labels of the auxiliary objective", "auxiliary clusters", low=1)
    aux_until: float = setting(0.5, "fraction of training after which the auxiliary weight is 0",
                               "auxiliary until", above=0.0, high=1.0)
    dst: str = setting("none", "dynamic sparse training: none, random (SET) or gradient (RigL-style) regrowth",
                       "dynamic sparsity", choices=DST_MODES)
    dst_every: int = setting(100, "ΔT: steps between connectivity updates", "update every", low=1, ui=(1, 10000))
    dst_zeta: float = setting(0.3, "ζ: initial fraction of each set's connections swapped (cosine decay)",
                              "swap fraction ζ", above=0.0, below=1.0, ui=(0.05, 0.9))
    dst_until: float = setting(0.75, "fraction of training after which connectivity is frozen", "update until",
                               above=0.0, high=1.0)
    epochs: int = setting(20, "passes over the training set", "epochs", low=1, ui=(1, 200))
    batch_size: int = setting(256, "points per step", "batch size", low=1, ui=[32, 64, 128, 256, 512, 1024])
    lr: float = setting(3e-3, "Adam's learning rate", "learning rate", above=0.0,
                        ui=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2])
    eval_every: int = setting(0, "steps between test evaluations", "evaluate every", low=0,
                              zero="0 = once per epoch", ui=(0, 10000))
    eval_k: int = setting(5, "metrics at k = 1, 3, ..., eval_k", "metrics up to k", low=1, high=1000)
    normalize: bool = setting(False, "l2-normalise the feature rows", "normalise rows")

    def __post_init__(self):
        super().__post_init__()
        if self.dst != "none":
            if self.head not in SPARSE_HEADS:
                raise ConfigError(f"dst needs a sparse head {SPARSE_HEADS}, got head={self.head!r}")
            self.dst_config()                                   # validates every, zeta, until

    def dst_config(self):
        from .dst import DSTConfig
        return DSTConfig(every=self.dst_every, zeta=self.dst_zeta, stop_fraction=self.dst_until,
                         regrow=self.dst, seed=self.seed)

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a JSON object (a dict), got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**d)

    def to_dict(self):
        return dataclasses.asdict(self)

    def model_config(self, n_features, n_labels):
        """The ModelConfig of this run on a dataset of n_features inputs and n_labels labels."""
        kw = {name: getattr(self, name) for name in MODEL_FIELDS}
        mc = ModelConfig(n_features=n_features, n_labels=n_labels,
                         aux_clusters=min(self.aux_clusters, n_labels) if self.aux else 0, **kw)
        if self.dst != "none" and self.fanin >= mc.head_in:
            raise ConfigError(f"dst needs fanin < the head's input width {mc.head_in}, "
                              f"got fanin={self.fanin}: there is nothing to regrow")
        return mc


_FIELD_HEADS = {f.name: f.metadata["heads"] for f in dataclasses.fields(TrainConfig) if f.metadata}

# named starting points for both front ends (`train --preset NAME`, the app's Train page): settings
# that differ from the defaults, which are the first preset
PRESETS = {
    "group-shared": {},
    "group-shared + dynamic sparse training": dict(dst="random", dst_every=20),
    "fixed fan-in": dict(head="fixed_fanin"),
    "dense": dict(head="dense"),
    "tiny": dict(hidden=64, fanin=16, group_size=16, epochs=10),
}
