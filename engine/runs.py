"""The run store: one directory per training run, the single source of truth for every front end.

    runs/<id>/config.json        the TrainConfig, as JSON
    runs/<id>/metrics.jsonl      one record per line, as the Trainer yields them
    runs/<id>/model.safetensors  the latest checkpoint (tensors only: no pickle)
    runs/<id>/ranks.json         a distributed run: what each process held (engine.distributed)

config.json, ranks.json and the checkpoint are written atomically (engine.files.atomic_write: a
temp directory of the writer's own, fsync, rename); metrics.jsonl is appended a whole line at a
time. A line is complete once its line end is written: what follows the last line end is a torn
write (a crash mid-line), ignored when read and dropped before the next append. A write that fails
(disk full, no permission) is a RunWriteError naming the file, and what was stored is kept: the
previous checkpoint stays valid, metrics.jsonl keeps its complete lines. Opening a run (Run(...),
RunStore.list()) removes the temp files of killed writers (engine.files.remove_stale_temps).

Everything read from a run is checked first (a regular file within its limit, strict JSON:
engine.files), and a complete line of metrics.jsonl must be a record: a JSON object with a string
"kind" and, for the kinds engine.train documents, a non-negative integer "step" and fields of the
documented types (RECORD_FIELDS; a step record its "loss" and "step_time" too). Anything else is a ConfigError naming the file, the line and the
problem; RunStore.entries() lists each run with its config and records, or with that error, so
one broken run never hides the others.

A checkpoint holds the model's state_dict under its own keys and, when saved with the trainer,
what resuming needs under "trainer/..." keys (Adam's moments and step counts, torch's RNG state)
plus a JSON header (step, epoch, config) in the safetensors metadata. Loading reads tensors only:
a file that is not safetensors (a pickle, a torch.save zip) is refused before anything is parsed.

    run.save_checkpoint(trainer.model, trainer)       # at each evaluation
    trainer = Trainer(run.config); run.resume(trainer)  # after a crash: continue from that step
"""

import json
import os
import shutil
import time
from pathlib import Path
from typing import NamedTuple

from safetensors import SafetensorError
from safetensors.torch import save_file

from .checkpoint import read_checkpoint
from .config import TrainConfig
from .errors import CheckpointError, ConfigError, RunNotFoundError, RunWriteError, XMCError
from .files import (RUN_FILE_LIMIT, append_line, atomic_write, os_reason, parse_json, read_regular,
                    remove_stale_temps)

CONFIG, METRICS, RANKS, CHECKPOINT = "config.json", "metrics.jsonl", "ranks.json", "model.safetensors"
TRAINER_PREFIX = "trainer/"
META_KEY = "xmc_trainer"

# what a field of a record must be: (as a message says it, test)
_COUNT = ("a non-negative integer", lambda v: type(v) is int and v >= 0)
_NUMBER = ("a number", lambda v: type(v) in (int, float))
_TEXT = ("a string", lambda v: type(v) is str)
_COUNTS = ("a list of non-negative integers", lambda v: type(v) is list and all(type(x) is int and x >= 0 for x in v))
# the fields of each kind of record engine.train documents, checked where present (RECORD_REQUIRED:
# always, the ones the front ends read); an eval record's scores ("P@1", "nDCG@5", ...: keys with an
# "@") are numbers; a record of another kind (a front end's) has only its "step", where present, checked
_ANY_KIND = {"step": _COUNT}
RECORD_REQUIRED = {"step": ("step", "loss", "step_time"), "eval": ("step",), "dst": ("step",), "error": ("step",),
                   "device": ("step", "device")}
RECORD_FIELDS = {
    "step": {"step": _COUNT, "epoch": _COUNT, "loss": _NUMBER, "head_loss": _NUMBER, "aux_loss": _NUMBER,
             "lr": _NUMBER, "step_time": _NUMBER},
    "eval": {"step": _COUNT, "epoch": _COUNT, "best_step": _COUNT, "eval_time": _NUMBER},
    "dst": {"step": _COUNT, "zeta": _NUMBER, "n_per_group": _COUNT, "dropped": _COUNT, "added": _COUNT,
            "churn": _COUNTS, "group": _COUNTS, "slot": _COUNTS, "old_input": _COUNTS, "new_input": _COUNTS},
    "error": {"step": _COUNT, "epoch": _COUNT, "error": _TEXT, "message": _TEXT},
    "device": {"step": _COUNT, "device": _TEXT, "why": _TEXT},
}
# each entry of ranks.json (DistributedTrainer.rank_report), all fields required
RANK_FIELDS = {"rank": _COUNT, "slots": _COUNT, "mach_reps": _COUNT, "head_params": _COUNT, "rss_mb": _NUMBER,
               "peak_rss_mb": _NUMBER}


def _fields_problem(fields, obj, scores=False):
    """The first field of the dict obj that is not what `fields` says it must be, as a message, or
    None; with scores, a key with an "@" must be a number."""
    for key, value in obj.items():
        check = fields.get(key) or (_NUMBER if scores and "@" in key else None)
        if check is not None and not check[1](value):
            shown = json.dumps(value)
            return f"{key!r} must be {check[0]}, got {shown if len(shown) <= 40 else shown[:40] + '...'}"
    return None


def _record_problem(record):
    """What keeps a parsed JSON value from being a record (see the module docstring), or None."""
    if type(record) is not dict:
        return f"a record must be a JSON object, got {type(record).__name__}"
    kind = record.get("kind")
    if type(kind) is not str:
        return 'a record needs a "kind" string'
    missing = [key for key in RECORD_REQUIRED.get(kind, ()) if key not in record]
    if missing:
        return f"a record of kind {kind!r} needs {', '.join(map(repr, missing))}"
    return _fields_problem(RECORD_FIELDS.get(kind, _ANY_KIND), record, scores=kind == "eval")


def _rank_problem(entry):
    """What keeps a parsed JSON value from being an entry of ranks.json, or None."""
    if type(entry) is not dict:
        return f"not a JSON object, got {type(entry).__name__}"
    missing = [k for k in RANK_FIELDS if k not in entry]
    if missing:
        return f"missing {', '.join(missing)}"
    return _fields_problem(RANK_FIELDS, entry)


def _read_run_file(path):
    """The bytes of a file of a stored run: a regular file within RUN_FILE_LIMIT, else ConfigError."""
    return read_regular(path, RUN_FILE_LIMIT, lambda problem: ConfigError(f"{path}: {problem}"))


def _write_error(path):
    return lambda problem: RunWriteError(f"{path}: {problem}")


def _dumps(value, path, **kw):
    """JSON text of value (finite numbers only, as the reader takes), else RunWriteError."""
    try:
        return json.dumps(value, allow_nan=False, **kw)
    except ValueError as e:
        raise RunWriteError(f"{path}: not written ({e})") from None


def _safetensors_writer(state, metadata):
    """write(path) of a safetensors file, its I/O failures as OSError (safetensors reports a full
    disk as a SafetensorError)."""
    def write(path):
        try:
            save_file(state, str(path), metadata=metadata)
        except SafetensorError as e:
            raise OSError(str(e)) from None
    return write


def _check_indices(model, path):
    """The integer buffers a checkpoint sets are indices into other tensors: check their range
    (the kernels trust them), as the model's constructor does."""
    slots = getattr(model, "slot_of_label", None)
    n_slots = getattr(model, "n_slots", None)
    if slots is not None and n_slots is not None and slots.numel():
        if int(slots.min()) < 0 or int(slots.max()) >= n_slots or slots.unique().numel() != slots.numel():
            raise CheckpointError(f"{path}: slot_of_label must be distinct slots in [0, {n_slots})")
    sparse = getattr(model, "sparse", None)
    if sparse is not None:
        try:
            sparse.set_index(sparse.idx.cpu().numpy())
        except (XMCError, ValueError) as e:
            raise CheckpointError(f"{path}: bad index sets ({e})") from None


class Run:
    def __init__(self, path):
        self.path = Path(path)
        self.id = self.path.name
        if os.path.lexists(self.path / CONFIG):          # only a run's own directory is tidied
            remove_stale_temps(self.path)

    @property
    def checkpoint_path(self):
        return self.path / CHECKPOINT

    @property
    def config(self):
        path = self.path / CONFIG
        if not os.path.lexists(path):
            raise RunNotFoundError(f"{self.path}: not a run (no config.json)")
        d = self.read_json(CONFIG)
        try:
            return TrainConfig.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def append(self, record):
        """Add a record to metrics.jsonl: the whole line or, on a failed write, nothing (RunWriteError)."""
        path = self.path / METRICS
        append_line(path, (_dumps(record, path) + "\n").encode(), RUN_FILE_LIMIT, _write_error(path))

    def write_json(self, name, value, indent=2):
        """Write the JSON file `name` of this run (a front end's own files too) atomically;
        RunWriteError when it cannot be, with the file as it was."""
        path = self.path / name
        text = _dumps(value, path, indent=indent)
        atomic_write(path, lambda p: p.write_text(text), _write_error(path))

    def save_ranks(self, ranks):
        """ranks.json: what each process of a distributed run held (DistributedTrainer.rank_report)."""
        self.write_json(RANKS, ranks)

    def ranks(self):
        """The ranks.json of a distributed run (a list of RANK_FIELDS objects), or None."""
        ranks = self.read_json(RANKS)
        if ranks is not None and type(ranks) is not list:
            raise ConfigError(f"{self.path / RANKS}: must be a JSON list, got {type(ranks).__name__}")
        for i, entry in enumerate(ranks or ()):
            problem = _rank_problem(entry)
            if problem:
                raise ConfigError(f"{self.path / RANKS}: entry {i}: {problem}")
        return ranks

    def read_json(self, name, default=None):
        """The JSON file `name` of this run (a front end's own files too), or default where there is
        none; ConfigError for one that is not a regular file within the limit or not strict JSON
        (engine.files.parse_json)."""
        path = self.path / name
        if not os.path.lexists(path):
            return default
        return parse_json(_read_run_file(path), lambda problem: ConfigError(f"{path}: {problem}"))

    def records(self):
        """All complete records written so far (a torn last line is ignored); ConfigError naming the
        file and the line for a complete line that is not a record."""
        path = self.path / METRICS
        if not os.path.lexists(path):
            return []
        *lines, _torn = _read_run_file(path).split(b"\n")
        return [self._record(path, number, line) for number, line in enumerate(lines, 1)]

    @staticmethod
    def _record(path, number, line):
        def error(problem):
            return ConfigError(f"{path} line {number}: {problem}")
        record = parse_json(line, error)
        problem = _record_problem(record)
        if problem:
            raise error(problem)
        return record

    def save_checkpoint(self, model, trainer=None):
        """Write the model's weights (and, given the trainer, what resuming needs) atomically."""
        self.save_state(model.state_dict(), None if trainer is None else trainer.checkpoint_state())

    def save_state(self, state, trainer_state=None):
        """save_checkpoint() from a model's state dict and a trainer's checkpoint_state() (or None:
        weights only). RunWriteError when it cannot be written: the previous checkpoint is kept."""
        state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        metadata = None
        if trainer_state is not None:
            tensors, meta = trainer_state
            state.update({TRAINER_PREFIX + k: v for k, v in tensors.items()})
            metadata = {META_KEY: _dumps(meta, self.checkpoint_path)}
        atomic_write(self.checkpoint_path, _safetensors_writer(state, metadata), _write_error(self.checkpoint_path))

    def _load_model(self, model, tensors):
        weights = {k: v for k, v in tensors.items() if not k.startswith(TRAINER_PREFIX)}
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise CheckpointError(f"{self.checkpoint_path}: does not fit the model "
                                  f"({'; '.join(line.strip() for line in first[:3])})") from None
        _check_indices(model, self.checkpoint_path)

    def _trainer_header(self, meta):
        """The JSON header of a resumable checkpoint's metadata (a dict), or None for weights only."""
        if META_KEY not in meta:
            return None
        state = parse_json(meta[META_KEY], lambda problem: CheckpointError(
            f"{self.checkpoint_path}: bad metadata ({problem})"))
        if not isinstance(state, dict):
            raise CheckpointError(f"{self.checkpoint_path}: bad metadata (not a JSON object)")
        return state

    def load_checkpoint(self, model):
        """Load the weights of the latest checkpoint into model."""
        tensors, _ = read_checkpoint(self.checkpoint_path)
        self._load_model(model, tensors)

    def checkpoint_step(self):
        """The step of the latest resumable checkpoint, or None."""
        _, meta = read_checkpoint(self.checkpoint_path)
        state = self._trainer_header(meta)
        return None if state is None else state.get("step")

    def resume(self, trainer, rewrite_records=True):
        """Load the latest checkpoint into a fresh Trainer of this run's config and drop the records
        written after it, so that trainer.run() continues the run as if it had never stopped.
        Returns the checkpoint's step. The trainer takes its own part of the whole-model state
        (`Trainer.own_state`); the ranks of a distributed run but the first pass
        rewrite_records=False (one process writes the records)."""
        tensors, meta = read_checkpoint(self.checkpoint_path)
        state = self._trainer_header(meta)
        if state is None:
            raise CheckpointError(f"{self.checkpoint_path}: has weights only (no optimizer state), "
                                  f"cannot resume")
        self._load_model(trainer.model, trainer.own_state(tensors))
        trainer.restore({k[len(TRAINER_PREFIX):]: v for k, v in tensors.items() if k.startswith(TRAINER_PREFIX)},
                        state)
        if not rewrite_records:
            return trainer.step
        path = self.path / METRICS
        text = "".join(_dumps(r, path) + "\n" for r in self.records() if r.get("step", 0) <= trainer.step)
        atomic_write(path, lambda p: p.write_text(text), _write_error(path))
        return trainer.step


class RunEntry(NamedTuple):
    """A stored run as RunStore.entries() lists it: its config and records, or the error that keeps
    it from being read (then config and records are None)."""
    run: Run
    config: TrainConfig = None
    records: list = None
    error: str = None


def _entry(run):
    try:
        config, records = run.config, run.records()
        run.ranks()
    except XMCError as e:
        return RunEntry(run, error=str(e))
    return RunEntry(run, config, records)


class RunStore:
    def __init__(self, root="runs"):
        self.root = Path(root)

    def create(self, config: TrainConfig) -> Run:
        """A new run directory holding config.json; RunWriteError when it cannot be made (nothing is
        left behind then)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunWriteError(f"{self.root}: cannot hold runs ({os_reason(e)})") from None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1000):
            path = self.root / (f"{stamp}-{config.model.head.name}" + ("" if n == 0 else f"-{n}"))
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
            except OSError as e:
                raise RunWriteError(f"{path}: cannot be made ({os_reason(e)})") from None
        else:
            raise RunWriteError(f"{self.root}: 1000 runs started in the second {stamp}; no run id left")
        run = Run(path)
        try:
            run.write_json(CONFIG, config.to_dict())
        except RunWriteError:
            shutil.rmtree(path, ignore_errors=True)
            raise
        return run

    def get(self, run_id) -> Run:
        """The run `run_id` (a directory name of this store); RunNotFoundError for anything else."""
        if type(run_id) is not str or run_id in ("", ".", "..") or "/" in run_id or "\x00" in run_id:
            raise RunNotFoundError(f"no run {run_id!r} in {self.root} (a run id is the name of its directory)")
        path = self.root / run_id
        if not os.path.lexists(path / CONFIG):
            raise RunNotFoundError(f"no run {run_id!r} in {self.root}")
        return Run(path)

    def list(self):
        """The runs: the directories of root that hold a config.json (readable or not), oldest first.
        RunNotFoundError when root is there but is not a directory that can be listed."""
        if not os.path.lexists(self.root):
            return []
        try:
            children = sorted(self.root.iterdir())
        except OSError as e:
            raise RunNotFoundError(f"{self.root}: not a directory of runs ({os_reason(e)})") from None
        return [Run(p) for p in children if p.is_dir() and os.path.lexists(p / CONFIG)]

    def entries(self):
        """Every run read whole, oldest first: a RunEntry of its config and records, or of the
        message of the error that keeps one of its files (config.json, metrics.jsonl, ranks.json)
        from being read. Never raises for a run."""
        return [_entry(run) for run in self.list()]
