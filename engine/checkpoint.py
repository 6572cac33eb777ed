"""The checkpoint codec: safetensors files read without unpickling, and a trainer's resumable state
as tensors + a JSON header.

    encode_trainer_state(optimizer, rng_state, step, epoch, config) -> (tensors, meta)
        tensors: Adam's state per parameter ("optim/<i>/<name>") and torch's RNG state ("rng/torch")
        meta:    {"format", "step", "epoch", "config", "optim_scalars"}: JSON-able
    decode_trainer_state(tensors, meta, params, config, total_steps) -> (optimizer state, rng, step)
        the inverse, every part checked against the model's parameters and the run's config

engine.runs stores both in a run's model.safetensors (the tensors under "trainer/" keys, meta in
the file's metadata).
"""

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import CheckpointError, ConfigError
from .files import CHECKPOINT_LIMIT, open_checked

CHECKPOINT_FORMAT = 1


def read_checkpoint(path):
    """(tensors, metadata) of a safetensors file; CheckpointError for anything else, pickles included.

    Nothing in the file is executed (nothing here unpickles): a file that does not open like
    safetensors (an 8-byte little-endian header size that fits the file, then the header's "{") but
    carries the pickle or zip (torch.save) magic is named as such; then safetensors parses its JSON
    header and copies the raw tensor bytes. (A safetensors header size may itself start with the
    pickle byte 0x80.)"""
    path = Path(path)

    def error(problem):
        return CheckpointError(f"{path}: {'no checkpoint found' if problem == 'no such file' else problem}")
    f, size = open_checked(path, CHECKPOINT_LIMIT, error)     # a FIFO, a device: refused before a read
    with f:
        head = f.read(9)
    safetensors_like = len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8
    if not safetensors_like and (head[:1] == b"\x80" or head[:4] == b"PK\x03\x04"):
        raise CheckpointError(f"{path}: is a pickle / torch.save file, not safetensors; refused "
                              f"(loading a pickle can run arbitrary code)")
    if len(head) < 8:
        raise CheckpointError(f"{path}: not a safetensors checkpoint (truncated: {len(head)} bytes)")
    try:
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors checkpoint ({e})") from None
    return tensors, meta


def encode_trainer_state(optimizer, rng_state, step, epoch, config):
    """(tensors, meta) of what resuming needs beyond the model's weights."""
    tensors, scalars = {}, {}
    for i, state in optimizer.state_dict()["state"].items():
        for name, v in state.items():
            if torch.is_tensor(v):
                tensors[f"optim/{i}/{name}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{i}/{name}"] = v
    tensors["rng/torch"] = rng_state.clone()
    meta = {"format": CHECKPOINT_FORMAT, "step": step, "epoch": epoch,
            "config": config.to_dict(), "optim_scalars": scalars}
    return tensors, meta


def _optimizer_state(tensors, meta, params):
    """{parameter index: {name: value}} of the checkpoint, each shape checked against its parameter."""
    state = {}
    try:
        for key, v in tensors.items():
            if key.startswith("optim/"):
                _, i, name = key.split("/", 2)
                state.setdefault(int(i), {})[name] = v
        for key, v in dict(meta.get("optim_scalars", {})).items():
            i, name = key.split("/", 1)
            state.setdefault(int(i), {})[name] = v
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"malformed optimizer state in the checkpoint ({e})") from None
    for i, st in state.items():
        if not 0 <= i < len(params):
            raise CheckpointError(f"optimizer state for parameter {i}, the model has {len(params)}")
        for name, v in st.items():
            if torch.is_tensor(v) and v.dim() and v.shape != params[i].shape:
                raise CheckpointError(f"optimizer state {name} of parameter {i} has shape {tuple(v.shape)}, "
                                      f"the parameter {tuple(params[i].shape)}")
    return state


def _same_config(stored, config):
    """Whether a checkpoint's stored config (the nested or the older flat form) is `config`, but
    for the device (a run resumes on another one)."""
    try:
        return type(config).from_dict(stored).here() == config.here()
    except ConfigError:
        return False


def decode_trainer_state(tensors, meta, params, config, total_steps):
    """(optimizer state, torch RNG state or None, step) of an encode_trainer_state() result, for a
    trainer of `config` whose optimizer holds `params` and whose run has `total_steps` steps."""
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint format {meta.get('format')!r} is not {CHECKPOINT_FORMAT}")
    if not _same_config(meta.get("config"), config):
        raise CheckpointError("the checkpoint was written by another config; resume with the run's own config")
    step = meta.get("step")
    if type(step) is not int or not 0 <= step <= total_steps:
        raise CheckpointError(f"checkpoint step {step!r} is not in [0, {total_steps}]")
    state = _optimizer_state(tensors, meta, params)
    rng = tensors.get("rng/torch")
    if rng is not None and (rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape):
        raise CheckpointError(f"torch RNG state in the checkpoint has dtype {rng.dtype} and shape "
                              f"{tuple(rng.shape)}, expected uint8 {tuple(torch.get_rng_state().shape)}")
    return state, rng, step
