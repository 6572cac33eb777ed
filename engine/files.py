"""Reading a file that someone else may have put there: a regular file within a size limit,
checked before a byte is read.

    data = read_regular(path, limit, error)     # bytes; error(problem) is the exception to raise

A FIFO, a device (/dev/zero), a directory or a symlink loop in place of a dataset file, a name
file or a stored run's file is refused with a message, never waited on or read without end.
"""

import errno
import os
import stat

GiB = 2**30
DATASET_FILE_LIMIT = 64 * GiB      # train.txt, test.txt (the largest public XC sets are a few GB)
NAMES_FILE_LIMIT = 4 * GiB         # labels.txt, features.txt
RUN_FILE_LIMIT = 4 * GiB           # a run's config.json, metrics.jsonl, ranks.json, status.json
CHECKPOINT_LIMIT = 1024 * GiB      # model.safetensors (memory-mapped, not read whole)

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
