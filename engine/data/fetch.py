"""`python -m engine fetch NAME`: download a public dataset, check it, convert it to the XC layout
and cache it; `fetch --list`: the datasets there are (engine.data.registry), with their sources.

    path = fetch("bibtex")                  # <cache>/bibtex; then load_dataset("bibtex")
    print(format_sources())                 # fetch --list

A fetch, step by step (bad input stops it with a one-line FetchError or DatasetFormatError):
 1. the name is looked up, in any case; an unknown one is an error that lists the known ones;
 2. each file is downloaded to <cache>/.downloads/, resumed where the server allows (engine.data.download);
 3. its SHA-256 must equal the one pinned in the registry, or for a file without one, the one
    recorded at its first download (<cache>/checksums.json); a mismatch deletes the download and
    caches nothing;
 4. the files are converted (engine.data.convert) and written in the XC layout (train.txt, test.txt,
    labels.txt, features.txt where there are names, source.json) into a scratch folder of the cache;
 5. a first download's checksum is recorded, and the folder is renamed into place, <cache>/<name>:
    a dataset folder in the cache is always complete. Downloads are deleted once converted; only
    an interrupted one stays, to be resumed.

The cache is $XMC_DATA_HOME, else ~/.cache/xmc-lab. With $XMC_FETCH_MIRROR set to a base URL,
every file is fetched from <base>/<host>/<path> of its URL instead (a local mirror, or the tests'
server); the checksums apply just the same.
"""

import json
import os
import re
import shutil
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

from ..errors import DatasetFormatError, FetchError
from ..files import RUN_FILE_LIMIT, read_regular
from .convert import CONVERTERS, convert
from .dataset import save_dataset
from .download import check_url, download
from .registry import NAME_RE, SOURCES, cache_home

MIRROR_ENV = "XMC_FETCH_MIRROR"
RECORDS = "checksums.json"              # in the cache: {url: {"sha256", "recorded"}} of first downloads
_SHA256 = re.compile(r"[0-9a-f]{64}")


def find_source(name, registry=SOURCES):
    """The Source called `name` (any case); FetchError listing the known names otherwise."""
    source = registry.get(name.lower()) if isinstance(name, str) else None
    if source is None:
        raise FetchError(f"unknown dataset {name!r}; choose from: {', '.join(registry)}")
    return source


def check_source(source):
    """Raise FetchError naming the first thing wrong with a registry entry."""
    where = f"registry entry {source.name!r}"
    if not isinstance(source.name, str) or not NAME_RE.fullmatch(source.name):
        raise FetchError(f"{where}: a name is lower case letters, digits, '.', '_', '-'")
    if source.format not in CONVERTERS:
        raise FetchError(f"{where}: unknown format {source.format!r}; known: {', '.join(CONVERTERS)}")
    roles = [f.role for f in source.files]
    if sorted(roles) != sorted(CONVERTERS[source.format][0]):
        raise FetchError(f"{where}: format {source.format} needs files {CONVERTERS[source.format][0]}, has {roles}")
    for f in source.files:
        check_url(f.url)
        if f.sha256 is not None and not (isinstance(f.sha256, str) and _SHA256.fullmatch(f.sha256)):
            raise FetchError(f"{where}: sha256 of {f.url} must be 64 lower-case hex digits, got {f.sha256!r}")
        if f.size is not None and not (isinstance(f.size, int) and f.size > 0):
            raise FetchError(f"{where}: size of {f.url} must be a positive integer, got {f.size!r}")


def fetch(name, *, force=False, registry=SOURCES, progress=True, log=None):
    """Fetch the dataset `name` into the cache (see the module docstring); returns its folder.

    Parameters
    ----------
    name : str
        A registry name, any case.
    force : bool
        Download and convert again even if the cache has it (replacing it only once done).
    registry : dict of name -> Source
        The datasets known (tests pass their own).
    progress : bool
        Progress bars for the downloads (on a terminal).
    log : callable, optional
        Receives a line for each step.
    """
    log = log or (lambda line: None)
    source = find_source(name, registry)
    check_source(source)
    cache = _cache()
    final = cache / source.name
    if final.is_dir() and not force:
        log(f"{source.name} is already in the cache: {final} (--force fetches it again)")
        return final
    records = read_records(cache)
    downloads = cache / ".downloads"
    downloads.mkdir(exist_ok=True)
    files, shas = {}, {}
    try:
        for f in source.files:
            log(f"downloading {f.url}")
            files[f.role] = downloads / f"{source.name}.{f.role}"
            shas[f.url] = _download(f, files[f.role], records, cache, progress)
        log(f"converting {source.name} ({source.format})")
        _build(source, files, shas, cache, final)
    except (FetchError, DatasetFormatError, OSError):
        for f in source.files:                              # complete downloads go; a partial one stays
            if f.url in shas:
                files[f.role].unlink(missing_ok=True)
        raise
    for path in files.values():
        path.unlink(missing_ok=True)
    _record(cache, records, source, shas)
    log(f"{source.name}: {final}")
    return final


def _cache():
    cache = cache_home()
    if os.path.lexists(cache) and not cache.is_dir():
        raise FetchError(f"the cache {cache} is not a folder (set XMC_DATA_HOME to another place)")
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def mirrored(url):
    """Where `url` is fetched from: itself, or <$XMC_FETCH_MIRROR>/<host>/<path>."""
    base = os.environ.get(MIRROR_ENV)
    if not base:
        return url
    parts = urllib.parse.urlsplit(url)
    return f"{base.rstrip('/')}/{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")


def _download(file, part, records, cache, progress):
    """Download one file of a source to `part` and check its SHA-256; returns it."""
    sha = download(mirrored(file.url), part, size=file.size, progress=progress)
    if file.sha256 is not None:
        expected, why = file.sha256, "pinned in the registry"
    else:
        expected, why = records.get(file.url, {}).get("sha256"), f"recorded at its first download in {cache / RECORDS}"
    if expected is not None and sha != expected:
        part.unlink()
        raise FetchError(f"{file.url}: SHA-256 {sha} differs from {expected}, {why}; the download is deleted "
                         "and nothing is cached")
    return sha


def _build(source, files, shas, cache, final):
    """Convert the downloads into a scratch folder of the cache, then rename it to `final`."""
    work = Path(tempfile.mkdtemp(prefix=f".{source.name}.", dir=cache))
    try:
        (work / "scratch").mkdir()
        dataset = convert(source, files, work / "scratch")
        save_dataset(dataset, work / "dataset")
        provenance = {"name": source.name, "format": source.format, "about": source.about,
                      "files": [{"role": f.role, "url": f.url, "sha256": shas[f.url],
                                 "checksum": "pinned" if f.sha256 else "first download"} for f in source.files]}
        (work / "dataset" / "source.json").write_text(json.dumps(provenance, indent=1) + "\n")
        _install(work / "dataset", final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _install(new, final):
    """Rename the complete folder `new` to `final`, replacing what was there."""
    old = None
    if os.path.lexists(final):
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
    os.rename(new, final)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()


# ---------------------------------------------------------------------------------------------
# the checksums of first downloads

def read_records(cache):
    """{url: {"sha256", "recorded"}} of the first downloads, from <cache>/checksums.json."""
    path = cache / RECORDS
    if not os.path.lexists(path):
        return {}
    data = read_regular(path, RUN_FILE_LIMIT, lambda problem: FetchError(f"{path}: {problem}"))
    try:
        records = json.loads(data)
    except ValueError:
        records = None
    if not isinstance(records, dict) or not all(
            isinstance(r, dict) and isinstance(r.get("sha256"), str) and _SHA256.fullmatch(r["sha256"])
            for r in records.values()):
        raise FetchError(f"{path}: not the checksums of first downloads ({{url: {{\"sha256\": ...}}}}); it is "
                         "what later downloads are checked against: repair it, or delete it to trust the next ones")
    return records


def _record(cache, records, source, shas):
    """Add the first downloads of source's unpinned files to the records (atomically)."""
    new = {f.url: {"sha256": shas[f.url], "recorded": time.strftime("%Y-%m-%d")}
           for f in source.files if f.sha256 is None and f.url not in records}
    if not new:
        return
    tmp = cache / f".{RECORDS}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps({**records, **new}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, cache / RECORDS)


# ---------------------------------------------------------------------------------------------
# fetch --list

def fetched_datasets(registry=SOURCES):
    """The names of the registry's datasets that are in the cache."""
    cache = cache_home()
    return [name for name in registry if (cache / name).is_dir()]


def format_sources(registry=SOURCES):
    """The text of `fetch --list`: each dataset's size, checksum kind, files, URLs and SHA-256s."""
    cache = cache_home()
    records = read_records(cache) if cache.is_dir() else {}
    fetched = set(fetched_datasets(registry))
    out = [f"{len(registry)} datasets (python -m engine fetch NAME; cache {cache}):"]
    for s in registry.values():
        kind = "SHA-256 pinned" if s.pinned else "SHA-256 of the first download"
        out.append(f"\n{s.name}  {_size(s.size)}  {s.format}  {kind}{'  [fetched]' if s.name in fetched else ''}")
        out.append(f"  {s.about}")
        for f in s.files:
            if f.sha256:
                sha = f.sha256
            elif f.url in records:
                sha = f"{records[f.url]['sha256']} (recorded {records[f.url].get('recorded', '?')})"
            else:
                sha = "not yet recorded (first download)"
            out.append(f"  {f.role:7} {_size(f.size):>9}  {f.url}\n          sha256 {sha}")
    return "\n".join(out)


def _size(n):
    if n is None:
        return "size ?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
