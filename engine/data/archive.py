"""Copying named members out of a downloaded archive (a tar of any compression, or a zip) without
trusting it.

    found = extract_members(path, {"xmc-base/eurlex-4k/Y.trn.npz": work / "Y.trn.npz", ...})

Every member is checked, wanted or not, and the archive is refused (FetchError naming it and the
member) if one has an absolute path, a drive letter, a backslash, a '..' component, is a link
(symbolic or hard), a device or a FIFO, or if two members share a name. A member is never
written under its own name: only the wanted ones are copied, each to the path the caller chose,
within a size limit.
"""

import posixpath
import lzma
import re
import stat
import tarfile
import zipfile
import zlib

from ..files import DATASET_FILE_LIMIT
from ..errors import FetchError
from .download import CHUNK

_DRIVE = re.compile(r"[A-Za-z]:")


def extract_members(path, wanted, limit=DATASET_FILE_LIMIT):
    """Copy the members named in `wanted` ({member name: destination path}) out of the archive at
    `path`; returns the set of the wanted names it holds (a missing one is the caller's to judge).
    Names compare after normalisation ('./a//b' is 'a/b')."""
    if zipfile.is_zipfile(path):
        return _extract_zip(path, wanted, limit)
    try:
        return _extract_tar(path, wanted, limit)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as e:   # not a tar, damaged
        raise FetchError(f"{path}: cannot read it as a tar or zip archive ({e})") from None


def _check_name(archive, name):
    """The normalised member name, or FetchError if it could land outside a folder it is put in."""
    if not name or "\x00" in name:
        raise FetchError(f"{archive}: member {name!r} has an empty or NUL name")
    if name.startswith("/") or _DRIVE.match(name):
        raise FetchError(f"{archive}: member {name!r} has an absolute path")
    if "\\" in name:
        raise FetchError(f"{archive}: member {name!r} has a backslash in its path")
    if ".." in name.split("/"):
        raise FetchError(f"{archive}: member {name!r} climbs out of the archive ('..')")
    return posixpath.normpath(name)


def _check_unique(archive, seen, name):
    if name in seen:
        raise FetchError(f"{archive}: two members named {name!r}")
    seen.add(name)


def _extract_tar(path, wanted, limit):
    found, seen = set(), set()
    with tarfile.open(path, "r|*") as tar:                 # one pass, in stream order
        for member in tar:
            name = _check_name(path, member.name)
            if member.issym() or member.islnk():
                raise FetchError(f"{path}: member {member.name!r} is a link (to {member.linkname!r})")
            if not (member.isreg() or member.isdir()):
                raise FetchError(f"{path}: member {member.name!r} is not a regular file or a folder")
            _check_unique(path, seen, name)
            if member.isreg() and name in wanted:
                if member.size > limit:
                    raise FetchError(f"{path}: member {name!r} is {member.size:,} bytes, over the limit")
                _copy(tar.extractfile(member), wanted[name], limit, path, name)
                found.add(name)
    return found


def _extract_zip(path, wanted, limit):
    try:
        with zipfile.ZipFile(path) as z:
            infos, seen = [], set()
            for info in z.infolist():
                name = _check_name(path, info.filename.rstrip("/") if info.is_dir() else info.filename)
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind == stat.S_IFLNK:
                    raise FetchError(f"{path}: member {info.filename!r} is a symbolic link")
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise FetchError(f"{path}: member {info.filename!r} is not a regular file or a folder")
                _check_unique(path, seen, name)
                infos.append((name, info))
            found = set()
            for name, info in infos:
                if not info.is_dir() and name in wanted:
                    if info.file_size > limit:
                        raise FetchError(f"{path}: member {name!r} is {info.file_size:,} bytes, over the limit")
                    with z.open(info) as src:
                        _copy(src, wanted[name], limit, path, name)
                    found.add(name)
            return found
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError) as e:   # damaged, encrypted
        raise FetchError(f"{path}: cannot read the zip archive ({e})") from None


def _copy(src, dest, limit, archive, name):
    """Copy the stream src to the new file dest, refusing more than `limit` bytes."""
    copied = 0
    with open(dest, "wb") as out:
        while chunk := src.read(CHUNK):
            copied += len(chunk)
            if copied > limit:
                raise FetchError(f"{archive}: member {name!r} is over the limit of {limit:,} bytes")
            out.write(chunk)

