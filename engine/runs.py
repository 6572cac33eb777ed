"""The run store: one directory per training run, the single source of truth for every front end.

    runs/<id>/config.json        the TrainConfig, as JSON
    runs/<id>/metrics.jsonl      one record per line, as the Trainer yields them
    runs/<id>/model.safetensors  the latest checkpoint (tensors only: no pickle)

config.json and the checkpoint are written atomically (temp file + rename); metrics.jsonl is
appended line by line, and a torn last line (a crash mid-write) is ignored when read.
"""

import json
import os
import time
from pathlib import Path

from safetensors.torch import load_file, save_file

from .errors import XMCError
from .train import TrainConfig


class RunNotFoundError(XMCError):
    pass


def _atomic_write(path, write):
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class Run:
    def __init__(self, path):
        self.path = Path(path)
        self.id = self.path.name

    @property
    def config(self):
        return TrainConfig.from_dict(json.loads((self.path / "config.json").read_text()))

    def append(self, record):
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def records(self):
        """All complete records written so far."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:       # a torn last line from a crash
                break
        return out

    def save_checkpoint(self, model):
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        _atomic_write(self.path / "model.safetensors", lambda p: save_file(state, str(p)))

    def load_checkpoint(self, model):
        model.load_state_dict(load_file(str(self.path / "model.safetensors")))


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
