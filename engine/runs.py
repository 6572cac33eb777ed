"""The run store: one directory per training run, the single source of truth for every front end.

    runs/<id>/config.json        the TrainConfig, as JSON
    runs/<id>/metrics.jsonl      one record per line, as the Trainer yields them
    runs/<id>/model.safetensors  the latest checkpoint (tensors only: no pickle)
    runs/<id>/ranks.json         a distributed run: what each process held (engine.distributed)

config.json and the checkpoint are written atomically (temp file + fsync + rename); metrics.jsonl
is appended line by line, and a torn last line (a crash mid-write) is ignored when read.

A checkpoint holds the model's state_dict under its own keys and, when saved with the trainer,
what resuming needs under "trainer/..." keys (Adam's moments and step counts, torch's RNG state)
plus a JSON header (step, epoch, config) in the safetensors metadata. Loading reads tensors only:
a file that is not safetensors (a pickle, a torch.save zip) is refused before anything is parsed.

    run.save_checkpoint(trainer.model, trainer)       # at each evaluation
    trainer = Trainer(run.config); run.resume(trainer)  # after a crash: continue from that step
"""

import json
import os
import time
from pathlib import Path

from safetensors.torch import save_file

from .checkpoint import read_checkpoint
from .config import TrainConfig
from .errors import CheckpointError, ConfigError, RunNotFoundError, XMCError
from .files import RUN_FILE_LIMIT, read_regular

CHECKPOINT = "model.safetensors"
TRAINER_PREFIX = "trainer/"
META_KEY = "xmc_trainer"


def _atomic_write(path, write):
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb+") as f:          # the bytes are on disk before the name points at them
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_run_file(path):
    """The bytes of a file of a stored run: a regular file within RUN_FILE_LIMIT, else ConfigError."""
    return read_regular(path, RUN_FILE_LIMIT, lambda problem: ConfigError(f"{path}: {problem}"))


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

    @property
    def checkpoint_path(self):
        return self.path / CHECKPOINT

    @property
    def config(self):
        path = self.path / "config.json"
        if not os.path.lexists(path):
            raise RunNotFoundError(f"{self.path}: not a run (no config.json)")
        d = self.read_json("config.json")
        try:
            return TrainConfig.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def append(self, record):
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def save_ranks(self, ranks):
        """ranks.json: what each process of a distributed run held (DistributedTrainer.rank_report)."""
        _atomic_write(self.path / "ranks.json", lambda p: p.write_text(json.dumps(ranks, indent=2)))

    def ranks(self):
        """The ranks.json of a distributed run, or None."""
        return self.read_json("ranks.json")

    def read_json(self, name, default=None):
        """The JSON file `name` of this run (a front end's own files too), or default where there is
        none; ConfigError for one that is not a regular file within the limit or not JSON."""
        path = self.path / name
        if not os.path.lexists(path):
            return default
        try:
            return json.loads(_read_run_file(path))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None

    def records(self):
        """All complete records written so far."""
        path = self.path / "metrics.jsonl"
        if not os.path.lexists(path):
            return []
        out = []
        for line in _read_run_file(path).decode("utf-8", errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:       # a torn last line from a crash
                break
        return out

    def save_checkpoint(self, model, trainer=None):
        """Write the model's weights (and, given the trainer, what resuming needs) atomically."""
        self.save_state(model.state_dict(), None if trainer is None else trainer.checkpoint_state())

    def save_state(self, state, trainer_state=None):
        """save_checkpoint() from a model's state dict and a trainer's checkpoint_state() (or None:
        weights only)."""
        state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        metadata = None
        if trainer_state is not None:
            tensors, meta = trainer_state
            state.update({TRAINER_PREFIX + k: v for k, v in tensors.items()})
            metadata = {META_KEY: json.dumps(meta)}
        _atomic_write(self.checkpoint_path, lambda p: save_file(state, str(p), metadata=metadata))

    def _load_model(self, model, tensors):
        weights = {k: v for k, v in tensors.items() if not k.startswith(TRAINER_PREFIX)}
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise CheckpointError(f"{self.checkpoint_path}: does not fit the model "
                                  f"({'; '.join(line.strip() for line in first[:3])})") from None
        _check_indices(model, self.checkpoint_path)

    def load_checkpoint(self, model):
        """Load the weights of the latest checkpoint into model."""
        tensors, _ = read_checkpoint(self.checkpoint_path)
        self._load_model(model, tensors)

    def checkpoint_step(self):
        """The step of the latest resumable checkpoint, or None."""
        _, meta = read_checkpoint(self.checkpoint_path)
        return json.loads(meta[META_KEY])["step"] if META_KEY in meta else None

    def resume(self, trainer, rewrite_records=True):
        """Load the latest checkpoint into a fresh Trainer of this run's config and drop the records
        written after it, so that trainer.run() continues the run as if it had never stopped.
        Returns the checkpoint's step. The trainer takes its own part of the whole-model state
        (`Trainer.own_state`); the ranks of a distributed run but the first pass
        rewrite_records=False (one process writes the records)."""
        tensors, meta = read_checkpoint(self.checkpoint_path)
        if META_KEY not in meta:
            raise CheckpointError(f"{self.checkpoint_path}: has weights only (no optimizer state), "
                                  f"cannot resume")
        try:
            state = json.loads(meta[META_KEY])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{self.checkpoint_path}: bad metadata ({e})") from None
        if not isinstance(state, dict):
            raise CheckpointError(f"{self.checkpoint_path}: bad metadata (not a JSON object)")
        self._load_model(trainer.model, trainer.own_state(tensors))
        trainer.restore({k[len(TRAINER_PREFIX):]: v for k, v in tensors.items() if k.startswith(TRAINER_PREFIX)},
                        state)
        if not rewrite_records:
            return trainer.step
        kept = [r for r in self.records() if r.get("step", 0) <= trainer.step]
        _atomic_write(self.path / "metrics.jsonl",
                      lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in kept)))
        return trainer.step


class RunStore:
    def __init__(self, root="runs"):
        self.root = Path(root)

    def create(self, config: TrainConfig) -> Run:
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1000):
            path = self.root / (f"{stamp}-{config.head}" + ("" if n == 0 else f"-{n}"))
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        _atomic_write(path / "config.json", lambda p: p.write_text(json.dumps(config.to_dict(), indent=2)))
        return Run(path)

    def get(self, run_id) -> Run:
        path = self.root / run_id
        if not (path / "config.json").exists():
            raise RunNotFoundError(f"no run {run_id!r} in {self.root}")
        return Run(path)

    def list(self):
        """Runs with a config, oldest first."""
        if not self.root.exists():
            return []
        return [Run(p) for p in sorted(self.root.iterdir()) if (p / "config.json").exists()]
