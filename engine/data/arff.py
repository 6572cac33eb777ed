"""MULAN's multi-label files: an ARFF reader (sparse and dense rows) and the XML list of label columns.

    names = read_label_names("bibtex.xml")          # the label columns, in order: label j is names[j]
    table = read_arff("bibtex-train.arff", names)    # table.X (N, D), table.Y (N, L), table.feature_names

An ARFF file is a header (``@relation``, then one ``@attribute NAME TYPE`` per column, TYPE numeric
or nominal ``{v1,v2,...}``), then ``@data`` and one row per line: dense (``v1,v2,...``, one value
per column) or sparse (``{i v,i v,...}``, 0-based columns; a column not named holds 0, or for a
nominal column its first value). Names and values may be quoted ('...' or "...", where a backslash
escapes the next character); unquoted, a backslash and the character after it are kept as written
(MULAN's delicious has a column TAG_m\\'usica, named so in its XML too).

MULAN names its label columns in an XML file; each is nominal {0,1}, a label is on where it is 1.
Every other column becomes features, in column order:
    numeric                 one feature, its value (zeros are not stored)
    nominal {no, v}         one feature, 1 where the value is v; "no" is 0, no or false (any case)
    other nominal {v1..vk}  k features "NAME=v1" .. "NAME=vk", one of them 1 (one-hot)
String, date and relational columns, missing values ('?') and instance weights are refused, as is
anything malformed: DatasetFormatError names the file, the 1-based line and the problem.
"""

import math
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import DatasetFormatError
from ..files import DATASET_FILE_LIMIT, read_regular

XML_LIMIT = 64 * 2**20                  # a label list is a few KB; no DTD, no entities
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMERIC = ("numeric", "real", "integer")
_TOKEN = re.compile(r"""\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[{},]|(?:[^\s{},'"\\]|\\.)+)""")
_ESCAPE = re.compile(r"\\(.)")
_INDEX = re.compile(r"[0-9]{1,9}")
_NEGATIVE = ("0", "no", "false")        # the value of a two-valued nominal column that means "not there"


@dataclass(frozen=True)
class Column:
    """One @attribute: its name and its nominal values (None for a numeric column)."""
    name: str
    values: tuple[str, ...] | None


@dataclass(frozen=True, eq=False)
class ArffTable:
    """An ARFF file read against its label columns."""
    columns: tuple[Column, ...]         # the header, for comparing a train file with its test file
    X: sp.csr_matrix                    # (N, D) float32
    Y: sp.csr_matrix                    # (N, L) float32 ones
    feature_names: list[str]            # D names


def read_label_names(path):
    """The label names of a MULAN XML label file (``<labels><label name="..."/>...``, nested labels
    of a hierarchy included, in document order)."""
    name = str(path)
    data = read_regular(path, XML_LIMIT, lambda problem: DatasetFormatError(name, None, problem))
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise DatasetFormatError(name, None, "has a DTD or an entity declaration; a label list needs none")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as e:
        raise DatasetFormatError(name, e.position[0], f"not well-formed XML ({e})") from None
    if _local(root.tag) != "labels":
        raise DatasetFormatError(name, None, f"root element is <{_local(root.tag)}>, expected <labels>")
    names = [el.get("name") for el in root.iter() if _local(el.tag) == "label"]
    if not names:
        raise DatasetFormatError(name, None, "lists no <label>")
    for j, label in enumerate(names):
        if not label or not label.strip():
            raise DatasetFormatError(name, None, f"<label> {j + 1} has no name")
    _check_unique(name, names, "label")
    return names


def _local(tag):
    """An element's tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def _check_unique(name, names, kind):
    seen = set()
    for n in names:
        if n in seen:
            raise DatasetFormatError(name, None, f"{kind} {n!r} appears twice")
        seen.add(n)


def read_arff(path, label_names):
    """Read an ARFF file whose columns named in `label_names` are the labels.

    Returns
    -------
    ArffTable
        X of shape (N, D) and Y of shape (N, len(label_names)), float32 csr with sorted indices;
        the D feature names.
    """
    name = str(path)
    lines = _read_text(path).split("\n")
    columns, first_row = _parse_header(name, lines)
    decoders, feature_names, defaults = _decoders(name, columns, label_names)
    X, Y = _parse_rows(name, lines, first_row, decoders, defaults, len(feature_names), len(label_names))
    return ArffTable(tuple(columns), X, Y, feature_names)


def _read_text(path):
    name = str(path)
    data = read_regular(path, DATASET_FILE_LIMIT, lambda problem: DatasetFormatError(name, None, problem))
    if b"\x00" in data:
        raise DatasetFormatError(name, data.count(b"\n", 0, data.find(b"\x00")) + 1, "binary data (NUL byte)")
    try:
        return data.decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        raise DatasetFormatError(name, data.count(b"\n", 0, e.start) + 1,
                                 f"not UTF-8 text (byte 0x{data[e.start]:02x})") from None


def _tokens(name, line_no, text):
    """The tokens of one line: quoted strings (unquoted), '{', '}', ',' and bare words."""
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            if text[pos:].strip():
                raise DatasetFormatError(name, line_no, f"unbalanced quote in {text[pos:pos + 40]!r}")
            break
        tok = m.group(1)
        out.append(_ESCAPE.sub(r"\1", tok[1:-1]) if tok[0] in "'\"" else tok)
        pos = m.end()
    return out


def _parse_header(name, lines):
    """(columns, index of the first line after @data)."""
    columns = []
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        keyword = line.split(None, 1)[0].lower()
        if keyword == "@relation":
            continue
        if keyword == "@data":
            if not columns:
                raise DatasetFormatError(name, i + 1, "@data before any @attribute")
            return columns, i + 1
        if keyword != "@attribute":
            raise DatasetFormatError(name, i + 1, f"expected @relation, @attribute or @data, got {line[:40]!r}")
        columns.append(_parse_attribute(name, i + 1, line))
    raise DatasetFormatError(name, None, "no @data section")


def _parse_attribute(name, line_no, line):
    tokens = _tokens(name, line_no, line)[1:]
    if len(tokens) < 2:
        raise DatasetFormatError(name, line_no, "@attribute needs a name and a type")
    column, kind = tokens[0], tokens[1]
    if kind == "{":
        if tokens[-1] != "}":
            raise DatasetFormatError(name, line_no, f"nominal values of {column!r} do not end with '}}'")
        values = tuple(tokens[2:-1:2])
        if not values or tokens[3:-1:2] != [","] * (len(values) - 1) or "," in values or "}" in values:
            raise DatasetFormatError(name, line_no, f"bad nominal value list of {column!r}")
        if len(set(values)) != len(values):
            raise DatasetFormatError(name, line_no, f"a nominal value of {column!r} appears twice")
        return Column(column, values)
    if kind.lower() in _NUMERIC and len(tokens) == 2:
        return Column(column, None)
    raise DatasetFormatError(name, line_no, f"column {column!r} has type {' '.join(tokens[1:])[:40]!r}: "
                             "only numeric and nominal columns are supported")


# Decoders: per column, ("x", feature) for numeric, ("x1", feature, on value, off value) for
# nominal {no, v}, ("onehot", first feature, value -> index), ("y", label, "1", "0").


def _on_off(values):
    """(on, off): the values of a two-valued nominal column that set and do not set its feature, or
    None (one-hot then)."""
    if len(values) == 2:
        negative = [v.lower() in _NEGATIVE for v in values]
        if sum(negative) == 1:
            return values[negative.index(False)], values[negative.index(True)]
    return None


def _decoders(name, columns, label_names):
    """(decoders, feature names, defaults): the defaults are what a sparse row's omitted columns hold
    where that is not nothing, [(column, its first value)]."""
    by_name = {}
    for c, col in enumerate(columns):
        if col.name in by_name:
            raise DatasetFormatError(name, None, f"column {col.name!r} is declared twice")
        by_name[col.name] = c
    decoders, feature_names = [None] * len(columns), []
    for j, label in enumerate(label_names):
        c = by_name.get(label)
        if c is None:
            raise DatasetFormatError(name, None, f"the label list names {label!r}, which is not a column here")
        if columns[c].values is None or set(columns[c].values) != {"0", "1"}:
            raise DatasetFormatError(name, None, f"label column {label!r} must be nominal {{0,1}}")
        decoders[c] = ("y", j, "1", "0")
    for c, col in enumerate(columns):
        if decoders[c] is not None:
            continue
        on_off = None if col.values is None else _on_off(col.values)
        if col.values is None:
            decoders[c] = ("x", len(feature_names))
        elif on_off is not None:
            decoders[c] = ("x1", len(feature_names), *on_off)
        else:
            decoders[c] = ("onehot", len(feature_names), {v: k for k, v in enumerate(col.values)})
            feature_names.extend(f"{col.name}={v}" for v in col.values)
            continue
        feature_names.append(col.name)
    defaults = [(c, col.values[0]) for c, col in enumerate(columns)
                if col.values is not None and (decoders[c][0] == "onehot" or decoders[c][2] == col.values[0])]
    return decoders, feature_names, defaults


def _parse_rows(name, lines, start, decoders, defaults, D, L):
    x_cols, x_vals, x_ptr, y_cols, y_ptr = [], [], [0], [], [0]
    for i in range(start, len(lines)):
        line = lines[i].strip()
        if not line or line.startswith("%"):
            continue
        cells = _sparse_cells(name, i + 1, line, len(decoders), defaults) if line[0] == "{" \
            else _dense_cells(name, i + 1, line, len(decoders))
        for c, value in cells:
            _decode(name, i + 1, decoders[c], value, x_cols, x_vals, y_cols)
        x_ptr.append(len(x_cols))
        y_ptr.append(len(y_cols))
    if len(x_ptr) == 1:
        raise DatasetFormatError(name, None, "no data rows")
    X = sp.csr_matrix((np.array(x_vals, np.float32), np.array(x_cols, np.int64), np.array(x_ptr)),
                      shape=(len(x_ptr) - 1, D))
    Y = sp.csr_matrix((np.ones(len(y_cols), np.float32), np.array(y_cols, np.int64), np.array(y_ptr)),
                      shape=(len(y_ptr) - 1, L))
    X.sort_indices()
    Y.sort_indices()
    return X, Y


def _dense_cells(name, line_no, line, n):
    """[(column, value token)] of a dense row."""
    values = [[v.strip()] for v in line.split(",")] if "'" not in line and '"' not in line \
        else _comma_groups(name, line_no, line)
    if len(values) != n:
        raise DatasetFormatError(name, line_no, f"{len(values)} values, the header declares {n} columns")
    for c, v in enumerate(values):
        if len(v) != 1 or not v[0]:
            raise DatasetFormatError(name, line_no, f"value {c + 1} is {' '.join(v)!r}, expected one value")
    return [(c, v[0]) for c, v in enumerate(values)]


def _sparse_cells(name, line_no, line, n, defaults):
    """[(column, value token)] of a sparse row '{i v,i v,...}', with the defaults of the columns it omits."""
    if not line.endswith("}") or line.count("{") != 1:
        raise DatasetFormatError(name, line_no, "a sparse row is '{index value, ...}' (instance weights are "
                                 "not supported)")
    entries = _sparse_entries(name, line_no, line[1:-1])
    if entries == [[]]:
        entries = []                    # '{}': every column at its default
    cells, seen = [], set()
    for parts in entries:
        if len(parts) != 2 or not _INDEX.fullmatch(parts[0]):
            raise DatasetFormatError(name, line_no, f"bad sparse entry {' '.join(parts)!r}, expected 'index value'")
        c = int(parts[0])
        if c >= n:
            raise DatasetFormatError(name, line_no, f"column index {c} >= {n} columns")
        if c in seen:
            raise DatasetFormatError(name, line_no, f"column index {c} appears twice")
        seen.add(c)
        cells.append((c, parts[1].strip()))
    cells.extend((c, v) for c, v in defaults if c not in seen)
    return cells


def _sparse_entries(name, line_no, body):
    """The entries of a sparse row's body, each [index, value] (as written)."""
    if "'" not in body and '"' not in body:
        return [entry.split(None, 1) for entry in body.split(",")]
    return _comma_groups(name, line_no, body)


def _comma_groups(name, line_no, text):
    """The tokens of a line with quotes, grouped between its commas."""
    groups = [[]]
    for tok in _tokens(name, line_no, text):
        if tok == ",":
            groups.append([])
        else:
            groups[-1].append(tok)
    return groups


def _decode(name, line_no, decoder, value, x_cols, x_vals, y_cols):
    """Append what one cell holds to the row being built."""
    kind = decoder[0]
    if value == "?":
        raise DatasetFormatError(name, line_no, "missing value '?' is not supported")
    if kind == "x":
        v = _number(name, line_no, value)
        if v != 0:
            x_cols.append(decoder[1])
            x_vals.append(v)
    elif kind == "onehot":
        k = decoder[2].get(value)
        if k is None:
            raise DatasetFormatError(name, line_no, f"value {value!r} is not one of its column's values")
        x_cols.append(decoder[1] + k)
        x_vals.append(1.0)
    elif value == decoder[2]:
        (y_cols if kind == "y" else x_cols).append(decoder[1])
        if kind == "x1":
            x_vals.append(1.0)
    elif value != decoder[3]:
        raise DatasetFormatError(name, line_no, f"value {value!r} is not one of its column's values "
                                 f"{{{decoder[3]},{decoder[2]}}}")


def _number(name, line_no, text):
    try:
        v = float(text)
    except ValueError:
        raise DatasetFormatError(name, line_no, f"bad number {text!r}") from None
    if not math.isfinite(v) or abs(v) > _FLOAT32_MAX:
        raise DatasetFormatError(name, line_no, f"value {text!r} is not a finite float32")
    return v
