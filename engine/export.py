"""`xmc-lab export`: a stored run as a bundle that travels, and its records as TensorBoard curves.

    export_run("runs/20261125-171500-group_shared", "bundle")   # then, anywhere: xmc-lab eval --run bundle
    export_tensorboard("runs/20261125-171500-group_shared", "tb")  # then: tensorboard --logdir tb
    run = open_run("bundle")                                    # a bundle checked whole, or a run directory

A bundle is a run directory (so the run store, `eval` and the app read it like any other run) that
holds only regular files, each listed with its size and SHA-256 in manifest.json:

    config.json          the TrainConfig, as the run stored it
    metrics.jsonl        its records
    model.safetensors    its latest checkpoint (weights, and what resuming needs)
    ranks.json           a distributed run's processes, where the run has it
    labels.txt           the dataset's label names, where it has them (one a line)
    manifest.json        {"format", "version", "run", "dataset": {data, name, n_features, n_labels},
                          "files": {name: {"bytes", "sha256"}}}

An export refuses a target that is there and not an empty folder, builds the bundle in a scratch
folder beside it, reads that back as a bundle (open_run: the same checks a receiver makes), then
renames it into place: a bundle is whole or absent. Opening a bundle checks the manifest (strict
JSON, known format and version, known file names only), then every file it lists: there, a regular
file and no symlink, of the listed size and SHA-256; a bundle file it does not list is refused too.
Any failure is one XMCError naming the file and the problem.
"""

import hashlib
import os
import re
import secrets
import shutil
from pathlib import Path

from .checkpoint import read_checkpoint
from .data import load_dataset
from .data.xc import write_names
from .errors import BundleError, ConfigError, RunNotFoundError, RunWriteError, XMCError
from .files import CHECKPOINT_LIMIT, RUN_FILE_LIMIT, check_regular, os_reason, parse_json, read_regular
from .runs import CHECKPOINT, CONFIG, METRICS, RANKS, Run

MANIFEST = "manifest.json"
LABELS = "labels.txt"
FORMAT, VERSION = "xmc-lab run bundle", 1
REQUIRED = (CONFIG, METRICS, CHECKPOINT)
OPTIONAL = (RANKS, LABELS)
COPIED = REQUIRED + (RANKS,)                         # from the run; labels.txt from its dataset
LIMITS = {CHECKPOINT: CHECKPOINT_LIMIT}             # every other file: RUN_FILE_LIMIT
MANIFEST_LIMIT = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 24


# ---------------------------------------------------------------------------------------------
# reading a file of a bundle: a regular file, never through a symlink


def _open_file(path, error):
    """A binary file object of `path` opened without following a symlink, and its size, checked
    (a regular file within its limit) before a byte is read."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    if os.path.islink(path):
        raise error("is a symlink; a bundle holds regular files only")
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error("no such file") from None
    except OSError as e:
        raise error(f"cannot be opened ({os_reason(e)})") from None
    try:
        size = check_regular(fd, LIMITS.get(path.name, RUN_FILE_LIMIT), error)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb"), size


def _digest(path, error, copy_to=None):
    """(bytes, SHA-256 hex) of the file at `path`, read in chunks; written to `copy_to` on the way."""
    f, _ = _open_file(path, error)
    sha, n = hashlib.sha256(), 0
    with f, (open(copy_to, "xb") if copy_to else open(os.devnull, "wb")) as out:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            out.write(chunk)
            n += len(chunk)
    return n, sha.hexdigest()


# ---------------------------------------------------------------------------------------------
# opening a bundle


def _manifest(folder):
    """The checked manifest of the bundle `folder` (a dict); BundleError naming the problem."""
    path = folder / MANIFEST

    def error(problem):
        return BundleError(f"{path}: {problem}")
    if os.path.islink(path):
        raise error("is a symlink; a bundle holds regular files only")
    m = parse_json(read_regular(path, MANIFEST_LIMIT, error), error)
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise error(f"not a manifest of an xmc-lab bundle (no \"format\": {FORMAT!r})")
    if m.get("version") != VERSION:
        raise error(f"bundle version {m.get('version')!r}; this xmc-lab reads version {VERSION}")
    files = m.get("files")
    if not isinstance(files, dict):
        raise error("\"files\" must be an object of file name -> {bytes, sha256}")
    unknown = sorted(set(files) - set(REQUIRED + OPTIONAL))
    if unknown:
        raise error(f"lists unknown files {unknown}; a bundle holds {', '.join(REQUIRED + OPTIONAL)}")
    missing = [name for name in REQUIRED if name not in files]
    if missing:
        raise error(f"does not list {', '.join(missing)}")
    for name, entry in files.items():
        if not (isinstance(entry, dict) and type(entry.get("bytes")) is int and entry["bytes"] >= 0
                and isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"])):
            raise error(f"entry {name!r} must be {{\"bytes\": a non-negative integer, "
                        f"\"sha256\": 64 lower-case hex digits}}")
    return m


def open_run(path):
    """The Run at `path`: a bundle (a folder with manifest.json) once every file is checked against
    the manifest (module docstring), or a run directory as the run store reads it."""
    folder = Path(path)
    if not folder.is_dir():
        raise RunNotFoundError(f"{folder}: no such run directory")
    if not os.path.lexists(folder / MANIFEST):
        return Run(folder)
    files = _manifest(folder)["files"]
    for name in REQUIRED + OPTIONAL:
        file = folder / name

        def error(problem, file=file):
            return BundleError(f"{file}: {problem}")
        if name not in files:
            if os.path.lexists(file):
                raise error(f"is not listed in {MANIFEST}")
            continue
        size, sha = _digest(file, error)
        if size != files[name]["bytes"]:
            raise error(f"is {size:,} bytes, the manifest says {files[name]['bytes']:,}")
        if sha != files[name]["sha256"]:
            raise error(f"SHA-256 {sha} differs from the manifest's {files[name]['sha256']}: "
                        f"the file changed since it was exported")
    return Run(folder)


# ---------------------------------------------------------------------------------------------
# writing a bundle


def _source(run_dir):
    """The Run at `run_dir`, read whole (config, records, ranks, checkpoint) before anything is written."""
    run = open_run(run_dir)
    run.config, run.records(), run.ranks()
    if not os.path.lexists(run.checkpoint_path):
        raise RunNotFoundError(f"{run.path}: no checkpoint (model.safetensors) to export")
    read_checkpoint(run.checkpoint_path)
    return run


def _target(to):
    """`to` as a Path, if it is absent or an empty folder; BundleError otherwise."""
    to = Path(to)
    if os.path.islink(to) or (to.exists() and not to.is_dir()):
        raise BundleError(f"{to}: is there and is not a folder; give a new folder or an empty one")
    if to.is_dir() and any(to.iterdir()):
        raise BundleError(f"{to}: is not empty; an export never overwrites (give a new folder)")
    return to


def _dataset_part(run):
    """(manifest's "dataset" entry, label names or None) of the run's dataset."""
    data = run.config.data
    try:
        ds = load_dataset(data)
    except XMCError as e:
        raise BundleError(f"the run's dataset {data!r} cannot be read, so its label names cannot be "
                          f"exported: {e}") from None
    return ({"data": str(data), "name": ds.name, "n_features": ds.n_features, "n_labels": ds.n_labels},
            ds.label_names)


def _write_bundle(run, scratch):
    """Copy the run's files into the folder `scratch` and write labels.txt and the manifest there."""
    dataset, names = _dataset_part(run)
    files = {}
    for name in COPIED:
        source = run.path / name
        if name not in REQUIRED and not os.path.lexists(source):
            continue
        size, sha = _digest(source, lambda problem, s=source: ConfigError(f"{s}: {problem}"), scratch / name)
        files[name] = {"bytes": size, "sha256": sha}
    if names is not None:
        write_names(scratch / LABELS, names)
        size, sha = _digest(scratch / LABELS, lambda problem: RunWriteError(f"{LABELS}: {problem}"))
        files[LABELS] = {"bytes": size, "sha256": sha}
    manifest = {"format": FORMAT, "version": VERSION, "run": run.id, "dataset": dataset, "files": files}
    Run(scratch).write_json(MANIFEST, manifest)


def export_run(run_dir, to):
    """Write the bundle of the run at `run_dir` (a run directory or a bundle) to the new or empty
    folder `to`; returns `to` as a Path. The bundle is whole or absent (module docstring)."""
    run, to = _source(run_dir), _target(os.path.abspath(to))
    scratch = to.with_name(f".{to.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        scratch.mkdir(parents=True)
        _write_bundle(run, scratch)
        _source(scratch)                                 # what a receiver checks, on what was written
        if to.is_dir():
            to.rmdir()
        os.rename(scratch, to)
    except OSError as e:
        raise RunWriteError(f"{to}: the bundle was not written ({os_reason(e)}); nothing is left there") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return to


# ---------------------------------------------------------------------------------------------
# TensorBoard


def scalars(records):
    """(tag "<kind>/<field>", value, step) of every number of every record ("step/loss", "eval/P@1",
    "dst/zeta"); lists, strings and booleans are no curve, "step" and "epoch" are the x axis."""
    for r in records:
        for key, value in r.items():
            if key not in ("kind", "step", "epoch") and type(value) in (int, float):
                yield f"{r['kind']}/{key}", value, r.get("step", 0)


def export_tensorboard(run_dir, logdir):
    """Write the records of the run at `run_dir` as TensorBoard scalars into `logdir`/<run id>/
    (new or empty); returns that folder. Needs the `tensorboard` package (the extra
    xmc-lab[tensorboard])."""
    run = open_run(run_dir)
    records = run.records()
    out = _target(Path(logdir) / run.id)
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise XMCError("--tensorboard needs the tensorboard package: pip install 'xmc-lab[tensorboard]'") from None
    try:
        with SummaryWriter(log_dir=str(out)) as writer:
            for tag, value, step in scalars(records):
                writer.add_scalar(tag, value, global_step=step)
    except OSError as e:
        raise RunWriteError(f"{out}: the event file was not written ({os_reason(e)})") from None
    return out

