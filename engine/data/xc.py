"""The Extreme Classification Repository's sparse text format: reader and writer, validated.

File format (``train.txt`` / ``test.txt``), 0-based ids::

    N D L                      <- header: points, features, labels
    3,17 0:0.5 12:1            <- labels, then feature:value pairs
     4:1 9:0.25                <- a point without labels starts with a space
    5,8                        <- a point without features

Name files (``labels.txt``, ``features.txt``) hold the name of label / feature j on line j+1.

Readers validate everything and raise ``DatasetFormatError`` naming the file, the 1-based line
and the problem; nothing is half-loaded. The writer is byte-for-byte deterministic and exact:
``read_xc`` gives back what ``write_xc`` wrote.
"""

import re
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import DatasetFormatError
from ..files import DATASET_FILE_LIMIT, NAMES_FILE_LIMIT, read_regular

MAX_DIM = 2**31 - 1                     # ids must fit int32 indices
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_ID = r"[0-9]{1,18}"                    # longer ids are out of range anyway; fit int64
_VAL = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"  # unambiguous: no backtracking blow-up
_LINE_RE = re.compile(rf"(?:{_ID}(?:,{_ID})*)?(?: +{_ID}:{_VAL})* *")
_ID_RE = re.compile(r"[0-9]+")
_VAL_RE = re.compile(_VAL)
_WIDE_BOMS = [(b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
              (b"\xfe\xff", "UTF-16")]       # longest first: the UTF-32 LE mark starts like UTF-16's
_SHOWN = 40                             # characters of a token quoted in a message


def _cut(token):
    """A token as a message shows it: cut to _SHOWN characters (a line may be megabytes)."""
    return token if len(token) <= _SHOWN else f"{token[:_SHOWN]}... ({len(token):,} characters)"


def _q(token):
    """A token as a message quotes it: its repr, cut to _SHOWN characters."""
    return repr(token) if len(token) <= _SHOWN else f"{token[:_SHOWN]!r}... ({len(token):,} characters)"


def _read_lines(path, limit=DATASET_FILE_LIMIT):
    """Read a text file of at most `limit` bytes as a list of lines (no line ends); reject anything
    but a regular file, binary and non-UTF-8 data, and a file with nothing in it but whitespace or a
    byte-order mark."""
    name = str(path)
    data = read_regular(path, limit, lambda problem: DatasetFormatError(name, None, problem))
    if not data:
        raise DatasetFormatError(name, None, "empty file")
    wide = next((f"; it starts with a {encoding} byte-order mark ({bom.hex(' ')}): save it as UTF-8"
                 for bom, encoding in _WIDE_BOMS if data.startswith(bom)), "")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DatasetFormatError(name, data.count(b"\n", 0, nul) + 1, "binary data (NUL byte), not a text file" + wide)
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")         # tolerate a byte-order mark
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DatasetFormatError(name, line, f"not UTF-8 text (byte 0x{data[e.start]:02x}){wide}") from None
    if not text.strip():
        raise DatasetFormatError(name, None, "no content: only " + ("whitespace" if text else "a byte-order mark"))
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()                     # the final line end
    if "\r" in text:
        lines = [s[:-1] if s.endswith("\r") else s for s in lines]
    return lines


def _parse_header(name, line):
    """'N D L' -> (N, D, L), each a positive int."""
    tokens = line.split()
    if len(tokens) != 3:
        raise DatasetFormatError(name, 1, f"header must be 'num_points num_features num_labels', got {_q(line)}")
    for what, tok in zip(("num_points", "num_features", "num_labels"), tokens):
        if not _ID_RE.fullmatch(tok):
            raise DatasetFormatError(name, 1, f"{what} must be a positive integer, got {_q(tok)}")
        digits = tok.lstrip("0")
        if len(digits) > len(str(MAX_DIM)) or not 1 <= int(digits or "0") <= MAX_DIM:
            raise DatasetFormatError(name, 1, f"{what} must be in [1, {MAX_DIM}], got {_cut(tok)}")
    return tuple(int(t.lstrip("0")) for t in tokens)


def _split_point(line):
    """'l1,l2 f:v f:v' -> ('l1,l2', 'f:v f:v'); a line starting with a space has no labels."""
    if line[:1] == " " or not line:
        return "", line
    labels, _, features = line.partition(" ")
    return labels, features


def _line_problem(line, num_features, num_labels):
    """The first thing wrong with one point line, as a message, or None if it is valid.

    The slow path: runs only once the fast path has found that something is wrong.
    """
    labels, features = _split_point(line)
    seen = set()
    for tok in labels.split(",") if labels else ():
        if not _ID_RE.fullmatch(tok):
            hint = " (a point without labels starts with a space)" if ":" in tok else ""
            return f"bad label id {_q(tok)}, expected a non-negative integer{hint}"
        problem = _id_problem("label", tok, num_labels, seen)
        if problem:
            return problem
    seen = set()
    for tok in features.split(" "):
        if not tok:
            continue
        fid, colon, val = tok.partition(":")
        if not colon:
            return f"bad feature {_q(tok)}, expected id:value"
        if not _ID_RE.fullmatch(fid):
            return f"bad feature id {_q(fid)} in {_q(tok)}, expected a non-negative integer"
        if not _VAL_RE.fullmatch(val):
            if val.lower().lstrip("+-") in ("nan", "inf", "infinity"):
                return f"value {_q(val)} in {_q(tok)} is not finite"
            return f"bad value {_q(val)} in {_q(tok)}"
        if abs(float(val)) > _FLOAT32_MAX:
            return f"value {_cut(val)} in {_q(tok)} is out of float32 range"
        problem = _id_problem("feature", fid, num_features, seen)
        if problem:
            return problem
    return None


def _id_problem(what, tok, limit, seen):
    """What is wrong with the id `tok` (digits) of a `what` (label, feature) given the ids seen so
    far, or None (then it is added to seen)."""
    digits = tok.lstrip("0") or "0"                     # int() of thousands of digits would raise
    if len(digits) > 18 or int(digits) >= limit:
        return f"{what} id {_cut(digits)} >= num_{what}s {limit}"
    if len(tok) > 18:                                   # as the fast path: an id fits int64
        return f"{what} id {_cut(tok)} has more than 18 digits"
    i = int(digits)
    if i in seen:
        return f"duplicate {what} id {i}"
    seen.add(i)
    return None


def _raise_first_problem(name, points, num_features, num_labels):
    """Scan the point lines in order and raise on the first bad one."""
    for i, line in enumerate(points):
        problem = _line_problem(line, num_features, num_labels)
        if problem is not None:
            raise DatasetFormatError(name, i + 2, problem)
    raise AssertionError(f"{name}: fast and slow parsers disagree")  # a bug in this module


def _has_duplicates(M):
    """Whether some row of a csr matrix with sorted indices repeats a column."""
    rows = np.repeat(np.arange(M.shape[0]), np.diff(M.indptr))
    return bool(np.any((np.diff(M.indices) == 0) & (np.diff(rows) == 0)))


def _parse_points(name, points, D, L):
    """The N point lines -> (X, Y), as read_xc returns them.

    Fast path: a regex per line, then bulk numpy conversion and range/duplicate checks. On
    any doubt the slow path rescans line by line and raises on the first problem.
    """
    N = len(points)
    for line in points:
        if not _LINE_RE.fullmatch(line):
            _raise_first_problem(name, points, D, L)
    split = [_split_point(line) for line in points]
    label_fields = [lab for lab, _ in split if lab]
    n_labels = np.array([lab.count(",") + 1 if lab else 0 for lab, _ in split], dtype=np.int64)
    n_features = np.array([feat.count(":") for _, feat in split], dtype=np.int64)
    labels = np.array(",".join(label_fields).split(",") if label_fields else [], dtype=np.int64)
    pairs = " ".join(feat for _, feat in split).replace(":", " ").split()
    fids = np.array(pairs[0::2], dtype=np.int64)
    vals = np.array(pairs[1::2], dtype=np.float64)
    if (labels.size and labels.max() >= L) or (fids.size and fids.max() >= D) \
            or not np.all(np.abs(vals) <= _FLOAT32_MAX):
        _raise_first_problem(name, points, D, L)

    X = sp.csr_matrix((vals.astype(np.float32), fids, np.concatenate([[0], np.cumsum(n_features)])), shape=(N, D))
    Y = sp.csr_matrix((np.ones(labels.size, np.float32), labels, np.concatenate([[0], np.cumsum(n_labels)])),
                      shape=(N, L))
    X.sort_indices()
    Y.sort_indices()
    if _has_duplicates(X) or _has_duplicates(Y):
        _raise_first_problem(name, points, D, L)
    return X, Y


def read_xc(path):
    """Read a file in the Extreme Classification Repository sparse format.

    Parameters
    ----------
    path : str or Path
        The file; it is named as given in error messages.

    Returns
    -------
    X : scipy.sparse.csr_matrix of shape (N, D), float32
        Feature values, sorted indices.
    Y : scipy.sparse.csr_matrix of shape (N, L), float32
        Ones where a point has a label, sorted indices.

    Raises
    ------
    DatasetFormatError
        On any malformation, naming the file, the 1-based line and the problem.
    """
    name = str(path)
    lines = _read_lines(path)
    N, D, L = _parse_header(name, lines[0])
    points = lines[1:N + 1]
    if len(points) < N:
        raise DatasetFormatError(name, None, f"expected {N} points, found {len(points)}")
    X, Y = _parse_points(name, points, D, L)
    for i, line in enumerate(lines[N + 1:], start=N + 2):
        if line.strip():
            raise DatasetFormatError(name, i, f"extra line after the {N} points the header announces")
    return X, Y


def _format_values(values):
    """Shortest '%.{6..9}g' strings that read back as the same float32 values."""
    values = np.asarray(values, dtype=np.float32)
    wide = values.astype(np.float64).tolist()
    out = ["%.6g" % v for v in wide]
    for digits in (7, 8, 9):            # 9 significant digits always round-trip a float32
        bad = np.flatnonzero(np.array(out, dtype=np.float64).astype(np.float32) != values)
        for i in bad.tolist():
            out[i] = f"%.{digits}g" % wide[i]
    return out


def _as_csr(M, what):
    """A canonical float32 csr copy of a 2-D matrix (sparse or dense), explicit zeros dropped."""
    M = sp.csr_matrix(M, dtype=np.float32, copy=True)
    M.sum_duplicates()
    M.eliminate_zeros()
    M.sort_indices()
    if not np.all(np.isfinite(M.data)):
        raise ValueError(f"{what} has non-finite values")
    return M


def write_xc(path, X, Y):
    """Write features and labels in the XC sparse format, byte-for-byte deterministic.

    Values are written with the fewest significant digits (6 to 9) that read back as the
    same float32, so ``read_xc(write_xc(X, Y))`` gives X and Y back exactly (explicit zeros
    dropped); 1.0 is written ``1``.

    Parameters
    ----------
    path : str or Path
    X : sparse or dense matrix of shape (N, D)
        Feature values; N >= 1.
    Y : sparse or dense matrix of shape (N, L)
        Nonzero entries are the labels.
    """
    X, Y = _as_csr(X, "X"), _as_csr(Y, "Y")
    N, D = X.shape
    if Y.shape[0] != N:
        raise ValueError(f"X has {N} rows but Y has {Y.shape[0]}")
    if N < 1 or D < 1 or Y.shape[1] < 1:
        raise ValueError(f"cannot write empty matrices: X {X.shape}, Y {Y.shape}")
    values = _format_values(X.data)
    tokens = [f"{f}:{v}" for f, v in zip(X.indices.tolist(), values)]
    label_ids = [str(lab) for lab in Y.indices.tolist()]
    xp, yp = X.indptr.tolist(), Y.indptr.tolist()
    out = [f"{N} {D} {Y.shape[1]}"]
    for i in range(N):
        labels = ",".join(label_ids[yp[i]:yp[i + 1]])
        features = " ".join(tokens[xp[i]:xp[i + 1]])
        out.append(f"{labels} {features}" if features else labels)
    Path(path).write_text("\n".join(out) + "\n", encoding="utf-8")


def read_names(path, expected_count, kind):
    """Read one name per line (UTF-8; names may contain spaces).

    Parameters
    ----------
    path : str or Path
    expected_count : int
        The number of names the dataset needs (its number of labels or features).
    kind : str
        What the names are, for messages: "label" or "feature".

    Returns
    -------
    names : list of str of length expected_count
    """
    names = _read_lines(path, NAMES_FILE_LIMIT)
    if len(names) != expected_count:
        raise DatasetFormatError(str(path), None, f"expected {expected_count} {kind} names, found {len(names)}")
    return names


def write_names(path, names):
    """Write one name per line; names must not contain line breaks."""
    names = [str(n) for n in names]
    for i, n in enumerate(names):
        if "\n" in n or "\r" in n:
            raise ValueError(f"name {i} contains a line break: {n!r}")
    Path(path).write_text("".join(n + "\n" for n in names), encoding="utf-8")
