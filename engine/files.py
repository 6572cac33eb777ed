"""The engine's files at its edge: reading one that someone else may have put there (a regular
file within a size limit, checked before a byte is read; JSON parsed strictly), and writing one
that a disk-full or a kill must not leave half-done.

    data = read_regular(path, limit, error)     # bytes; error(problem) is the exception to raise
    value = parse_json(data, error)             # error(problem) for anything but plain, finite JSON
    atomic_write(path, write, error)            # write(temp) writes the file; then one rename
    append_line(path, line, limit, error)       # the whole line or nothing
    remove_stale_temps(directory)               # the temp files of killed writers

A FIFO, a device (/dev/zero), a directory or a symlink loop in place of a dataset file, a name
file or a stored run's file is refused with a message, never waited on or read without end.
JSON is taken only in the part the standard parser reads safely: UTF-8 text, no NaN / Infinity,
numbers within int64 / float64, nesting at most MAX_JSON_DEPTH deep.

A write that fails (disk full, no permission) raises error(problem) and leaves the file as it was.
Each atomic write has a temp directory of its own beside the file, `<name>.<host>.<pid>.<random>.tmp`
(so two writers never share one, and what a library writes inside it goes too); a writer killed
mid-write leaves it behind, and remove_stale_temps() takes it away once that process of this host
is gone, or any `*.tmp` / `.tmpXXXXXX` (safetensors' own) entry once it is TEMP_MAX_AGE_S old.
"""

import contextlib
import errno
import json
import math
import os
import re
import secrets
import shutil
import socket
import stat
import time

GiB = 2**30
DATASET_FILE_LIMIT = 64 * GiB      # train.txt, test.txt (the largest public XC sets are a few GB)
NAMES_FILE_LIMIT = 4 * GiB         # labels.txt, features.txt
RUN_FILE_LIMIT = 4 * GiB           # a run's config.json, metrics.jsonl, ranks.json, status.json
CHECKPOINT_LIMIT = 1024 * GiB      # model.safetensors (memory-mapped, not read whole)
MAX_JSON_DEPTH = 64                # nesting of a JSON value (records and configs use 3)
TEMP_MAX_AGE_S = 3600              # no write takes an hour: an older temp file is a killed writer's
_INT64 = 2**63

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


def check_regular(fd, limit, error):
    """Raise error(problem) unless the open file fd is a regular file of at most `limit` bytes;
    returns its size."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise error(f"is {kind}, expected a regular file")
    if st.st_size > limit:
        raise error(f"is {st.st_size:,} bytes, over the limit of {limit:,}")
    return st.st_size


def open_regular(path, error):
    """An fd of `path` opened for reading without blocking (a FIFO with no writer opens at once);
    error(problem) for a missing file or one that cannot be opened."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error("no such file") from None
    except OSError as e:
        why = "a symlink loop" if e.errno == errno.ELOOP else e.strerror
        raise error(f"cannot be opened ({why})") from None


def open_checked(path, limit, error):
    """(binary file object, size) of `path`, a regular file of at most `limit` bytes; error(problem)
    otherwise, before anything is read."""
    fd = open_regular(path, error)
    try:
        size = check_regular(fd, limit, error)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb"), size


def read_regular(path, limit, error):
    """The bytes of `path`, a regular file of at most `limit` bytes; error(problem) otherwise."""
    f, size = open_checked(path, limit, error)
    with f:
        data = f.read(size + 1)
        while len(data) > size and len(data) <= limit:              # it grew since fstat
            more = f.read(min(limit + 1 - len(data), 1 << 26))
            if not more:
                break
            data += more
    if len(data) > limit:
        raise error(f"is over the limit of {limit:,} bytes")
    return data


class _Refused(ValueError):
    """A JSON token outside what parse_json takes (the message says why)."""


def _short(text):
    return text if len(text) <= 24 else f"{text[:24]}... ({len(text):,} characters)"


def _refuse_constant(name):
    raise _Refused(f"{name} is not a JSON number")


def _bounded_int(text):
    if len(text.lstrip("-")) > 19 or not -_INT64 <= int(text) < _INT64:
        raise _Refused(f"integer {_short(text)} is out of the int64 range")
    return int(text)


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {_short(text)} is out of the float64 range")
    return value


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET = re.compile(r"[\[\]{}]")
_STRICT = json.JSONDecoder(parse_constant=_refuse_constant, parse_int=_bounded_int, parse_float=_finite_float)


def _depth(text):
    """How deep the arrays and objects of JSON text nest (brackets inside strings do not count)."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(data, error):
    """The value of the JSON text `data` (UTF-8 bytes, or str; a leading byte-order mark is
    skipped); error(problem) for text that is not UTF-8 or not JSON, for NaN / Infinity, for
    numbers beyond int64 / float64 and for nesting deeper than MAX_JSON_DEPTH."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as e:
        raise error(f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    text = text.removeprefix("\ufeff")
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _depth(text) > MAX_JSON_DEPTH:
        raise error(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return _STRICT.decode(text)
    except (json.JSONDecodeError, _Refused) as e:
        raise error(f"not valid JSON ({e})") from None
    except RecursionError:                       # only where _depth was fooled by malformed text
        raise error(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None


def os_reason(e):
    """The reason an OSError gives, in a few words ("No space left on device")."""
    return e.strerror or str(e)


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"
_OWN_TEMP = re.compile(r".+\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[0-9]{1,10})\.[0-9a-f]{8}\.tmp")
_ANY_TEMP = re.compile(r".+\.tmp|\.tmp[A-Za-z0-9]{6}")


def atomic_write(path, write, error):
    """Write `path` (a Path) whole or not at all: write(temp) writes the file at `temp` (in a temp
    directory of this writer's own beside `path`), its bytes are synced, then one rename puts it in
    place. error(problem) when any of it fails (disk full, no permission): `path` is as it was and
    the temp directory is gone."""
    temp_dir = path.with_name(f"{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    temp = temp_dir / path.name
    try:
        temp_dir.mkdir()
        write(temp)
        fd = os.open(temp, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            os.fsync(fd)                         # the bytes are on disk before the name points at them
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as e:
        raise error(f"not written ({os_reason(e)}); what was there before is kept") from None
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def _complete_length(fd, size):
    """The bytes of the open file fd (of `size` bytes) up to and including its last line end."""
    end = size
    while end > 0:
        start = max(0, end - (1 << 20))
        last = os.pread(fd, end - start, start).rfind(b"\n")
        if last >= 0:
            return start + last + 1
        end = start
    return 0


def append_line(path, line, limit, error):
    """Append `line` (bytes ending in a line end) to `path`, created if missing, a regular file that
    stays within `limit` bytes; error(problem) when it cannot be, with the file cut back to the
    lines it held (no part of `line` is left). A last line without its line end (a writer killed
    mid-line) is a torn write: it is dropped first."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0),
                     0o644)                      # non-blocking: a FIFO is refused below, never waited on
    except OSError as e:
        raise error(f"cannot be opened for writing ({os_reason(e)})") from None
    try:
        size = check_regular(fd, limit, error)
        if size + len(line) > limit:
            raise error(f"is {size:,} bytes: one more line would pass the limit of {limit:,}")
        kept = _complete_length(fd, size) if size and os.pread(fd, 1, size - 1) != b"\n" else size
        try:
            if kept < size:
                os.ftruncate(fd, kept)
            done = 0
            while done < len(line):
                done += os.write(fd, line[done:])
        except OSError as e:
            with contextlib.suppress(OSError):   # if even this fails, readers ignore a torn last line
                os.ftruncate(fd, kept)
            raise error(f"not written ({os_reason(e)}); the lines before it are kept") from None
    finally:
        os.close(fd)


def _alive(pid):
    """Whether process `pid` of this host exists."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:                      # it exists, and is someone else's
        pass
    return True


def _stale(entry, now):
    """Whether a directory entry is a temp file whose writer is gone (see the module docstring)."""
    if not _ANY_TEMP.fullmatch(entry.name):
        return False
    own = _OWN_TEMP.fullmatch(entry.name)
    if own and own["host"] == _HOST and not _alive(int(own["pid"])):
        return True
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime > TEMP_MAX_AGE_S
    except OSError:
        return False


def remove_stale_temps(directory):
    """Remove the temp files and directories that killed writers left in `directory` (best effort:
    never raises; an entry still being written stays)."""
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        if _stale(entry, now):
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
