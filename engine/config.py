"""Every setting of a run, declared once: its default, its valid range, its help, its label.

    TrainConfig                     a run: data, schedule, DST, auxiliary objective, and
      .model: ModelSettings         what the network is: encoder widths, dropout, backend, seed, and
        .head: HeadSettings         its output layer, one dataclass per head, holding only that head's
                                    settings: DenseSettings, FixedFaninSettings (k, first inputs),
                                    GroupSharedSettings (+ m, label groups, dense share),
                                    DenseSparseSettings (+ m, label groups, dense labels),
                                    MachSettings (B, R, members)
    ModelConfig(ModelSettings)      + the dataset's shape (n_features D, n_labels L): builds an XMCModel

Each dataclass checks its own fields when it is made (`validate_fields`), so a config, however it
was made (constructor, config.json, the CLI, an import in the app), is valid or a ConfigError.

The front ends see the settings as one flat namespace (`SETTINGS`): each leaf has a unique name
(a head's fields under the head's prefix: `mach_buckets` is MachSettings.buckets), which is the
CLI's flag, the app's widget key and URL parameter, and a preset's key. `TrainConfig.of(**flat)`
builds the nested config from flat settings (a head's settings that the chosen head does not have
are ignored), `config.flat()` is the inverse; config.json holds the nested form (`to_dict`), and
`from_dict` also reads the flat form older runs stored.

A field's metadata holds its help, its label, its range (`low`/`high`, `above`/`below` for open ends)
or `choices`, what 0 means (`zero`) and, for the app, the values a widget offers (`ui`: a (low, high)
range or a list of options). The defaults are the one recipe both front ends start from.
"""

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import numpy as np

from .errors import ConfigError

HEADS = ("dense", "fixed_fanin", "group_shared", "dense_sparse", "mach")
SPARSE_HEADS = ("fixed_fanin", "group_shared", "dense_sparse")
GROUPED_HEADS = ("group_shared", "dense_sparse")          # heads whose labels share input sets
BACKENDS = ("auto", "cpu", "cuda")
DEVICES = ("auto", "cpu", "cuda")                         # engine.device resolves them
DST_MODES = ("none", "random", "gradient")
LR_DECAYS = ("none", "linear", "cosine")


def _metadata(help, label=None, *, low=None, high=None, above=None, below=None, choices=None, zero=None, ui=None):
    return dict(help=help, label=label, low=low, high=high, above=above, below=below, choices=choices,
                zero=zero, ui=ui)


def setting(default, help, label=None, **meta):
    """A dataclass field with its metadata (see the module docstring)."""
    return field(default=default, metadata=_metadata(help, label, **meta))


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


def _coerce(name, v, kind):
    """v as the declared type `kind` (numpy scalars accepted), or ConfigError naming the setting."""
    is_bool = isinstance(v, (bool, np.bool_))
    if kind is bool:
        ok = is_bool
    elif kind is int:
        ok = isinstance(v, numbers.Integral) and not is_bool
    elif kind is float:
        ok = isinstance(v, numbers.Real) and not is_bool
        if ok and not math.isfinite(v):
            raise ConfigError(f"{name} must be a finite number, got {v!r}")
    else:
        ok = isinstance(v, kind)
    if not ok:
        raise ConfigError(f"{name} must be {'an' if kind is int else 'a'} {kind.__name__}, "
                          f"got {type(v).__name__} {v!r}")
    return v if kind not in (bool, int, float, str) else kind(v)


def _check_range(name, v, m):
    if m["choices"] is not None and v not in m["choices"]:
        raise ConfigError(f"{name} must be one of {m['choices']}, got {v!r}")
    bad = ((m["low"] is not None and v < m["low"]) or (m["high"] is not None and v > m["high"])
           or (m["above"] is not None and not v > m["above"]) or (m["below"] is not None and not v < m["below"]))
    if bad:
        note = f" ({m['zero']})" if m["zero"] else ""
        raise ConfigError(f"{name} must be {describe_range(m)}{note}, got {v}")


def validate_fields(config):
    """The declared type, choices and range of every field of a settings dataclass; errors name the
    setting by its flat name (its `prefix` + field name)."""
    prefix = getattr(type(config), "prefix", "")
    for f in dataclasses.fields(config):
        name = prefix + f.name
        value = _coerce(name, getattr(config, f.name), f.type)
        object.__setattr__(config, f.name, value)
        if f.metadata:
            _check_range(name, value, f.metadata)


# ----------------------------------------------------------------------------- the heads' settings

@dataclass
class HeadSettings:
    """The settings of one output layer; `name` is the head's (HEADS), `prefix` that of its flat names."""
    name: ClassVar[str]
    prefix: ClassVar[str] = ""

    def __post_init__(self):
        validate_fields(self)


@dataclass
class DenseSettings(HeadSettings):
    """A dense layer over all labels (nn.Linear): no settings of its own."""
    name = "dense"


@dataclass
class FixedFaninSettings(HeadSettings):
    """Every label reads its own k inputs."""
    name = "fixed_fanin"
    fanin: int = setting(64, "k: inputs per label", "fan-in k", low=1, ui=(1, 512))
    index_init: str = setting("random", "a group's first inputs: random, or the k largest of its centroid",
                              "first inputs", choices=("random", "centroid"))


@dataclass
class LabelGroupSettings(FixedFaninSettings):
    """The label groups of a grouped head (GROUPED_HEADS): m labels share one set of k inputs."""
    groups: str = setting("random", "label groups: random, or clustered (balanced 2-means on PIFA)",
                          "label groups", choices=("random", "clustered"))
    group_size: int = setting(32, "m: labels sharing one set of k inputs", "group size m", low=1, ui=(1, 256))


@dataclass
class GroupSharedSettings(LabelGroupSettings):
    """Groups of m labels share one set of k inputs; each label keeps its own weights. The most
    frequent labels, a share of them, get a dense part instead (HASTE's top 10 %)."""
    name = "group_shared"
    dense_share: float = setting(0.1, "share of the labels, the most frequent, scored by a dense part",
                                 "dense share", low=0.0, below=1.0, zero="0 = every label in a group",
                                 ui=(0.0, 0.5))


@dataclass
class DenseSparseSettings(LabelGroupSettings):
    """A dense part for a given number of the most frequent labels, a group-shared tail for the others."""
    name = "dense_sparse"
    head_size: int = setting(100, "labels in the dense part (the most frequent)", "dense labels", low=1,
                             ui=(1, 2000))


@dataclass
class MachSettings(HeadSettings):
    """R hash repetitions of B buckets each, decoded by averaging."""
    name = "mach"
    prefix = "mach_"
    buckets: int = setting(256, "B: buckets per repetition", "buckets B", low=2, ui=[16, 32, 64, 128, 256, 512, 1024])
    reps: int = setting(4, "R: hash repetitions", "repetitions R", low=1, ui=(1, 16))
    members: int = setting(1, "independent models (own encoders) the R repetitions form", "members", low=1,
                           zero="1 = one shared encoder", ui=(1, 16))

    def __post_init__(self):
        super().__post_init__()
        if self.reps % self.members:
            raise ConfigError(f"mach_members must divide mach_reps={self.reps} (1 = one shared encoder), "
                              f"got {self.members}")


HEAD_SETTINGS = {cls.name: cls for cls in (DenseSettings, FixedFaninSettings, GroupSharedSettings,
                                           DenseSparseSettings, MachSettings)}


def head_fields(head):
    """The flat names of the settings head `head` (a name in HEADS) has, in declaration order."""
    cls = HEAD_SETTINGS[head]
    return tuple(cls.prefix + f.name for f in dataclasses.fields(cls))


def head_settings(head, **flat):
    """The HeadSettings of head `head` from flat settings (those it does not have are ignored)."""
    _check_range("head", _coerce("head", head, str), _HEAD_META)
    cls = HEAD_SETTINGS[head]
    return cls(**{f.name: flat[cls.prefix + f.name] for f in dataclasses.fields(cls) if cls.prefix + f.name in flat})


def _head_flat(head):
    return {"head": head.name, **{head.prefix + f.name: getattr(head, f.name) for f in dataclasses.fields(head)}}


_HEAD_META = _metadata("output layer", "head", choices=HEADS)


# ----------------------------------------------------------------------------- the model, the run

@dataclass
class ModelSettings:
    """What the network is: the encoder, its output layer `head`, the kernels, the seed."""
    head: HeadSettings = field(default_factory=GroupSharedSettings)
    hidden: int = setting(512, "encoder width", "hidden width", low=0, zero="0 = no encoder: the head reads the features",
                          ui=[0, 64, 128, 256, 512])
    intermediate: int = setting(0, "penultimate layer width", "intermediate layer", low=0, zero="0 = none")
    dropout: float = setting(0.3, "dropout on the encoder's layers", "dropout", low=0.0, below=1.0, ui=(0.0, 0.9))
    dense_dropout: float = setting(0.4, "further dropout on the inputs of a dense output layer (the dense head, a "
                                   "grouped head's dense part), after the encoder's: the frequent labels it "
                                   "scores over-fit first", "dense-layer dropout", low=0.0, below=1.0,
                                   zero="0 = the encoder's only", ui=(0.0, 0.9))
    backend: str = setting("auto", "kernel backend of the sparse heads", "backend", choices=BACKENDS)
    seed: int = setting(0, "seeds initialisation, index sets, hashes, batches", "seed", low=0, high=2**63 - 1,
                        ui=(0, 10**6))

    def __post_init__(self):
        validate_fields(self)
        if isinstance(self.head, MachSettings) and self.head.members > 1 and not self.hidden:
            raise ConfigError(f"mach_members={self.head.members} (independent encoders) needs hidden >= 1")

    @classmethod
    def of(cls, head="group_shared", **flat):
        """The settings (or, for ModelConfig, the config: pass its shape too) of flat model settings
        (see the module docstring); a head's settings that the chosen head does not have are ignored."""
        own = [f.name for f in dataclasses.fields(cls) if f.name != "head"]
        _refuse_unknown(flat, (*_ALL_HEAD_FIELDS, *own))
        head_flat = {k: flat.pop(k) for k in _ALL_HEAD_FIELDS if k in flat}
        return cls(head=head_settings(head, **head_flat), **flat)

    def flat(self):
        """The flat settings of this model (see the module docstring)."""
        return {**_head_flat(self.head), **{name: getattr(self, name) for name in MODEL_FIELDS}}


MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelSettings) if f.name != "head")


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
        h = self.head
        if self.hidden == 0 and self.intermediate:
            raise ConfigError(f"intermediate={self.intermediate} needs an encoder: hidden=0 means the head "
                              f"reads the input features")
        if self.sparse and not 1 <= h.fanin <= self.head_in:
            raise ConfigError(f"fanin must be in [1, {self.head_in}] (the head's input width), got {h.fanin}")
        if h.name == "dense_sparse" and not 1 <= h.head_size < self.n_labels:
            raise ConfigError(f"head_size must be in [1, {self.n_labels - 1}] (labels in the dense part), "
                              f"got {h.head_size}")
        if self.members > 1 and (self.intermediate or self.aux_clusters):
            raise ConfigError(f"mach_members={self.members} (independent encoders) takes no intermediate "
                              f"layer and no auxiliary objective")
        if not 0 <= self.aux_clusters <= self.n_labels:
            raise ConfigError(f"aux_clusters must be in [0, {self.n_labels}] (0 = none), got {self.aux_clusters}")

    @property
    def sparse(self):
        """Whether the head has a sparse part (fixed fan-in index sets)."""
        return self.head.name in SPARSE_HEADS

    @property
    def members(self):
        """Independent encoders side by side (MACH members; 1 for every other head)."""
        return self.head.members if isinstance(self.head, MachSettings) else 1

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
        h = self.head
        if h.name == "group_shared":
            return min(round(h.dense_share * self.n_labels), self.n_labels - 1)
        return self.n_labels if h.name == "dense" else h.head_size if h.name == "dense_sparse" else 0

    @property
    def group_labels(self):
        """Labels per group of the sparse part: m, or 1 for fixed fan-in."""
        return self.head.group_size if self.head.name in GROUPED_HEADS else 1


# what a stored config without these settings meant: they came later, and their absence is the
# model the run trained (no dense part, no dense-layer dropout), whatever today's defaults are
_BEFORE_MODEL = {"dense_dropout": 0.0}
_BEFORE_GROUP_SHARED = {"dense_share": 0.0}


@dataclass
class TrainConfig:
    """A run: the model's settings, the data, and how to train."""
    model: ModelSettings = field(default_factory=ModelSettings)
    data: str = setting("sample", "dataset directory (XC format), or 'sample' for the bundled one", "dataset")
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
    warmup: float = setting(0.05, "fraction of the steps over which the learning rate rises linearly from 0",
                            "lr warm-up", low=0.0, below=1.0, zero="0 = none", ui=(0.0, 0.5))
    decay: str = setting("cosine", "learning-rate decay after the warm-up: none, or linear / cosine to 0 at the "
                         "last step", "lr decay", choices=LR_DECAYS)
    val_fraction: float = setting(0.0, "share of the training points held out to validate on (never the test "
                                  "split): the run ends with the weights of its best validation nDCG@5",
                                  "validation split", low=0.0, below=1.0, zero="0 = none", ui=(0.0, 0.3))
    patience: int = setting(0, "evaluations in a row without a better validation nDCG@5 after which training "
                            "stops", "patience", low=0, zero="0 = every epoch is trained", ui=(0, 20))
    eval_every: int = setting(0, "steps between test evaluations", "evaluate every", low=0,
                              zero="0 = once per epoch", ui=(0, 10000))
    eval_k: int = setting(5, "metrics at k = 1, 3, ..., eval_k", "metrics up to k", low=1, high=1000)
    normalize: bool = setting(False, "l2-normalise the feature rows", "normalise rows")
    device: str = setting("auto", "where the run trains: auto takes the GPU when torch and CuPy both see one",
                          "device", choices=DEVICES)

    def __post_init__(self):
        validate_fields(self)
        if self.device == "cuda" and self.model.backend == "cpu":
            raise ConfigError("device='cuda' needs the 'cuda' or 'auto' backend, got backend='cpu' "
                              "(its numba kernels read host memory only)")
        if self.patience and not self.val_fraction:
            raise ConfigError(f"patience={self.patience} (early stopping) needs a validation split: val_fraction > 0")
        if self.dst != "none":
            if self.model.head.name not in SPARSE_HEADS:
                raise ConfigError(f"dst needs a sparse head {SPARSE_HEADS}, got head={self.model.head.name!r}")
            self.dst_config()                                   # validates every, zeta, until

    def dst_config(self):
        from .dst import DSTConfig
        return DSTConfig(every=self.dst_every, zeta=self.dst_zeta, stop_fraction=self.dst_until,
                         regrow=self.dst, seed=self.model.seed)

    @classmethod
    def of(cls, **flat):
        """The TrainConfig of flat settings (`SETTINGS` names; a head's settings that the chosen head
        does not have are ignored)."""
        _refuse_unknown(flat, SETTINGS)
        model = {k: flat.pop(k) for k in ("head", *_ALL_HEAD_FIELDS, *MODEL_FIELDS) if k in flat}
        return cls(model=ModelSettings.of(**model), **flat)

    def flat(self):
        """The flat settings of this run: `TrainConfig.of(**config.flat()) == config`."""
        return {**self.model.flat(), **{name: getattr(self, name) for name in TRAIN_FIELDS}}

    @classmethod
    def from_dict(cls, d):
        """The TrainConfig of config.json's object: the nested form of `to_dict`, or the flat one.
        A config stored without `dense_dropout` (or a group-shared head without `dense_share`) is from
        before that setting: it had none (0), whatever today's default is."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a JSON object (a dict), got {type(d).__name__}")
        if "model" not in d:
            group_shared = d.get("head", "group_shared") == "group_shared"
            return cls.of(**{**_BEFORE_MODEL, **(_BEFORE_GROUP_SHARED if group_shared else {}), **d})
        _refuse_unknown(d, ("model", *TRAIN_FIELDS))
        model = {**_BEFORE_MODEL, **_object(d["model"], "model")}
        _refuse_unknown(model, ("head", *MODEL_FIELDS), "model.")
        head = dict(_object(model.get("head", {"name": "group_shared"}), "model.head"))
        name = head.pop("name", None)
        _check_range("model.head.name", _coerce("model.head.name", name, str), _HEAD_META)
        cls_ = HEAD_SETTINGS[name]
        _refuse_unknown(head, [f.name for f in dataclasses.fields(cls_)], "model.head.")
        if name == "group_shared":
            head = {**_BEFORE_GROUP_SHARED, **head}
        settings = ModelSettings(head=cls_(**head), **{k: v for k, v in model.items() if k != "head"})
        return cls(model=settings, **{k: v for k, v in d.items() if k != "model"})

    def here(self):
        """This run's config with device 'auto': a stored run opened on this machine, wherever it was
        trained (its weights and checkpoint do not depend on the device)."""
        return dataclasses.replace(self, device="auto")

    def to_dict(self):
        """The nested, JSON-able form (config.json): the head's settings with its name."""
        d = dataclasses.asdict(self)
        d["model"]["head"] = {"name": self.model.head.name, **d["model"]["head"]}
        return d

    def model_config(self, n_features, n_labels):
        """The ModelConfig of this run on a dataset of n_features inputs and n_labels labels."""
        kw = {name: getattr(self.model, name) for name in MODEL_FIELDS}
        mc = ModelConfig(head=self.model.head, n_features=n_features, n_labels=n_labels,
                         aux_clusters=min(self.aux_clusters, n_labels) if self.aux else 0, **kw)
        if self.dst != "none" and mc.head.fanin >= mc.head_in:
            raise ConfigError(f"dst needs fanin < the head's input width {mc.head_in}, "
                              f"got fanin={mc.head.fanin}: there is nothing to regrow")
        return mc


TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "model")


def _object(v, where):
    if not isinstance(v, dict):
        raise ConfigError(f"{where} must be a JSON object (a dict), got {type(v).__name__}")
    return v


def _refuse_unknown(d, known, where=""):
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(where + str(k) for k in unknown)}")


class Setting(NamedTuple):
    """One leaf of the flat namespace: its name, type, default and metadata (see `setting`)."""
    name: str
    type: type
    default: object
    metadata: dict


def _settings():
    """Every flat setting: head, then each head's, then the model's, then the run's."""
    out = {"head": Setting("head", str, "group_shared", _HEAD_META)}
    for cls in HEAD_SETTINGS.values():
        for f in dataclasses.fields(cls):
            out.setdefault(cls.prefix + f.name, Setting(cls.prefix + f.name, f.type, f.default, f.metadata))
    for cls, names in ((ModelSettings, MODEL_FIELDS), (TrainConfig, TRAIN_FIELDS)):
        for f in dataclasses.fields(cls):
            if f.name in names:
                out[f.name] = Setting(f.name, f.type, f.default, f.metadata)
    return out


SETTINGS = _settings()
_ALL_HEAD_FIELDS = tuple(name for name in SETTINGS if name != "head" and name not in MODEL_FIELDS + TRAIN_FIELDS)


def used_by(head, name):
    """Whether `head` reads the flat setting `name` (the settings of other heads it does not have)."""
    return name not in _ALL_HEAD_FIELDS or name in head_fields(head)


# named starting points for both front ends (`train --preset NAME`, the app's Train page): flat
# settings that differ from the defaults, which are the first preset
PRESETS = {
    "group-shared": {},
    "group-shared + dynamic sparse training": dict(dst="random", dst_every=20),
    "fixed fan-in": dict(head="fixed_fanin"),
    "dense": dict(head="dense"),
    "tiny": dict(hidden=64, fanin=16, group_size=16, epochs=10),
}
