"""Tests for engine/data/xc.py: the XC format reader and writer, and the name files."""

import numpy as np
import pytest
import scipy.sparse as sp

from engine.data import read_names, read_xc, write_names, write_xc
from engine.errors import DatasetFormatError

# ----------------------------------------------------------------------------
# malformed files: (id, file bytes, line named in the error or None, words the message must contain)

OK = b"2 3 2\n0 1:1\n1 2:0.5\n"   # a valid file the cases below spoil one thing at a time
MALFORMED = [
    ("empty", b"", None, "empty file"),
    ("nul-bytes", b"2 3 2\n0 1:1\n\x00\x01\x02\x03\n", 3, "NUL"),
    ("not-utf8", b"2 3 2\n0 1:1\n1 2:0.5 \xff\xfe\n", 3, "not UTF-8"),
    ("blank-header", b"\n0 1:1\n1 2:1\n", 1, "header"),
    ("header-two-ints", b"2 3\n0 1:1\n1 2:1\n", 1, "header"),
    ("header-extra-token", b"2 3 2 9\n0 1:1\n1 2:1\n", 1, "header"),
    ("header-not-int", b"2 3 x\n0 1:1\n1 2:1\n", 1, "num_labels must be a positive integer, got 'x'"),
    ("header-float", b"2 3.0 2\n0 1:1\n1 2:1\n", 1, "num_features must be a positive integer"),
    ("header-zero", b"0 3 2\n", 1, "num_points must be in [1"),
    ("header-negative", b"2 3 -2\n0 1:1\n1 2:1\n", 1, "num_labels must be a positive integer, got '-2'"),
    ("too-few-points", b"3 3 2\n0 1:1\n1 2:1\n", None, "expected 3 points, found 2"),
    ("header-only", b"2 3 2\n", None, "expected 2 points, found 0"),
    ("extra-line", b"2 3 2\n0 1:1\n1 2:1\n\n0 0:1\n", 5, "extra line after the 2 points"),
    ("label-abc", b"2 3 2\n0 1:1\nabc 2:1\n", 3, "bad label id 'abc'"),
    ("label-float", b"2 3 2\n1.5 1:1\n1 2:1\n", 2, "bad label id '1.5'"),
    ("label-negative", b"2 3 2\n0 1:1\n-1 2:1\n", 3, "bad label id '-1'"),
    ("label-empty-id", b"2 3 2\n0,,1 1:1\n1 2:1\n", 2, "bad label id ''"),
    ("labels-missing", b"2 3 2\n0 1:1\n2:1 1:1\n", 3, "a point without labels starts with a space"),
    ("label-out-of-range", b"2 3 2\n0 1:1\n1,2 2:1\n", 3, "label id 2 >= num_labels 2"),
    ("label-duplicate", b"2 3 2\n1,0,1 1:1\n1 2:1\n", 2, "duplicate label id 1"),
    ("feature-no-value", b"2 3 2\n0 1:1\n1 2:\n", 3, "bad value '' in '2:'"),
    ("feature-no-id", b"2 3 2\n0 :1\n1 2:1\n", 2, "bad feature id '' in ':1'"),
    ("feature-no-colon", b"2 3 2\n0 1:1\n1 2\n", 3, "bad feature '2', expected id:value"),
    ("feature-two-colons", b"2 3 2\n0 1:1:2\n1 2:1\n", 2, "bad value '1:2' in '1:1:2'"),
    ("feature-float-id", b"2 3 2\n0 1.5:1\n1 2:1\n", 2, "bad feature id '1.5'"),
    ("feature-negative-id", b"2 3 2\n0 -1:1\n1 2:1\n", 2, "bad feature id '-1'"),
    ("feature-bad-value", b"2 3 2\n0 1:abc\n1 2:1\n", 2, "bad value 'abc' in '1:abc'"),
    ("feature-out-of-range", b"2 3 2\n0 1:1\n1 3:1\n", 3, "feature id 3 >= num_features 3"),
    ("feature-huge-id", b"2 3 2\n0 1:1\n1 99999999999999999999999:1\n", 3, "feature id 99999999999999999999999 >="),
    ("feature-duplicate", b"2 3 2\n0 1:1 2:1 1:0.5\n1 2:1\n", 2, "duplicate feature id 1"),
    ("value-nan", b"2 3 2\n0 1:1\n1 2:nan\n", 3, "value 'nan' in '2:nan' is not finite"),
    ("value-inf", b"2 3 2\n0 1:-inf\n1 2:1\n", 2, "value '-inf' in '1:-inf' is not finite"),
    ("value-float32-overflow", b"2 3 2\n0 1:1e39\n1 2:1\n", 2, "out of float32 range"),
    ("crlf-error", b"2 3 2\r\n0 1:1\r\n1 7:1\r\n", 3, "feature id 7 >= num_features 3"),
    ("first-error-wins", b"3 3 2\n0 1:1\n5 1:1\nabc\n", 3, "label id 5 >= num_labels 2"),
    ("long-line-bad-end", b"1 9000 1\n0 " + b" ".join(b"%d:0.123456789" % i for i in range(8000)) + b" 9:x\n",
     2, "bad value 'x'"),
    # degenerate content: nothing but an encoding mark or whitespace, another encoding, huge numbers
    ("bom-only", b"\xef\xbb\xbf", None, "no content: only a byte-order mark"),
    ("bom-newline", b"\xef\xbb\xbf\n", None, "no content: only whitespace"),
    ("whitespace-only", b"  \n\t\n \x0c\n", None, "no content: only whitespace"),
    ("line-ends-only", b"\r\n\r\n\n", None, "no content: only whitespace"),
    ("utf16", "2 3 2\n0 1:1\n1 2:1\n".encode("utf-16"), 1, "NUL byte), not a text file; it starts with a UTF-16 byte-order mark (ff fe): save it as UTF-8"),
    ("utf16-be", b"\xfe\xff" + "2 3 2\n".encode("utf-16-be"), 1, "UTF-16 byte-order mark (fe ff)"),
    ("utf32", "2 3 2\n".encode("utf-32"), 1, "UTF-32 byte-order mark (ff fe 00 00)"),
    ("utf16-bom-only", b"\xff\xfe", 1, "not UTF-8 text (byte 0xff); it starts with a UTF-16 byte-order mark"),
    ("nul-only", b"\x00\x00\x00", 1, "NUL"),
    ("header-5000-digits", b"2 3 " + b"9" * 5000 + b"\n", 1, "num_labels must be in [1, 2147483647], got 99"),
    ("label-5000-digits", b"2 3 2\n0 1:1\n" + b"9" * 5000 + b" 2:1\n", 3, ">= num_labels 2"),
    ("feature-5000-digits", b"2 3 2\n0 1:1\n1 " + b"7" * 5000 + b":1\n", 3, ">= num_features 3"),
    ("label-zero-padded-past-int64", b"2 3 2\n" + b"0" * 30 + b"1 1:1\n1 2:1\n", 2, "has more than 18 digits"),
]


@pytest.mark.parametrize("content, line, words", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_read_xc_rejects_malformed_file(tmp_path, content, line, words):
    # the error names the file, the line (or no line for whole-file problems) and the problem
    path = tmp_path / "train.txt"
    path.write_bytes(content)
    with pytest.raises(DatasetFormatError) as info:
        read_xc(path)
    message = str(info.value)
    assert message.startswith(str(path))
    if line is None:
        assert info.value.line is None and " line " not in message.replace(str(path), "")
    else:
        assert info.value.line == line and f"train.txt line {line}: " in message
    assert words in message


def test_a_huge_token_is_quoted_short(tmp_path):
    # a message names the token, cut: a line of megabytes does not become a message of megabytes
    path = tmp_path / "train.txt"
    for bad in (b"x" * 10**6 + b" 1:1", b"0 1:" + b"9" * 10**6, b"0 1:1 " + b"2" * 10**6 + b":1"):
        path.write_bytes(b"1 3 2\n" + bad + b"\n")
        with pytest.raises(DatasetFormatError, match="characters") as info:
            read_xc(path)
        assert len(str(info.value)) < 250 + len(str(path))


def test_a_header_with_leading_zeros_reads_as_before(tmp_path):
    (tmp_path / "train.txt").write_bytes(b"0002 " + b"0" * 5000 + b"3 2\n0 1:1\n1 2:1\n")
    X, Y = read_xc(tmp_path / "train.txt")
    assert X.shape == (2, 3) and Y.shape == (2, 2)


def test_read_xc_accepts_the_valid_base_case(tmp_path):
    # the cases above spoil this file one thing at a time
    (tmp_path / "train.txt").write_bytes(OK)
    X, Y = read_xc(tmp_path / "train.txt")
    assert X.shape == (2, 3) and Y.shape == (2, 2)


# ----------------------------------------------------------------------------
# valid files

def test_read_xc_hand_written_file(tmp_path):
    # CRLF line ends, a point without labels, one without features, one with neither,
    # unsorted features, exponents, trailing blank and whitespace-only lines
    path = tmp_path / "small.txt"
    path.write_bytes(b"5 6 3\r\n0,2 0:1 5:0.5\r\n 1:2 3:0.25\r\n1\r\n2,0 4:1e-3 0:3\r\n\r\n  \r\n\r\n")
    X, Y = read_xc(path)
    assert X.dtype == np.float32 and Y.dtype == np.float32
    assert X.format == "csr" and Y.format == "csr"
    assert X.has_canonical_format and Y.has_canonical_format
    np.testing.assert_array_equal(X.toarray(), np.array([
        [1, 0, 0, 0, 0, 0.5],
        [0, 2, 0, 0.25, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [3, 0, 0, 0, 1e-3, 0],
        [0, 0, 0, 0, 0, 0]], dtype=np.float32))
    np.testing.assert_array_equal(Y.toarray(), [[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0]])


def test_read_xc_long_valid_line(tmp_path):
    # an overlong line is fine as long as it is valid
    path = tmp_path / "long.txt"
    path.write_text("1 100000 1\n0 " + " ".join(f"{i}:{i % 7 + 1}" for i in range(100000)) + "\n")
    X, Y = read_xc(path)
    assert X.nnz == 100000 and X[0, 99999] == 99999 % 7 + 1 and Y.nnz == 1


def tricky_matrices():
    """Values that test the writer's digits (1e-7, 1/3, 3e38, ...), rows without features or labels."""
    rng = np.random.default_rng(0)
    X = sp.random(30, 40, density=0.2, format="csr", dtype=np.float32, random_state=rng)
    X.data[:7] = [1.0, 0.1, 1e-7, -2.5, 1 / 3, 3e38, 100.0]
    X = sp.csr_matrix(X.toarray() * (np.arange(30) % 5 != 0)[:, None])    # some rows without features
    Y = sp.csr_matrix((rng.random((30, 12)) < 0.2) * (np.arange(30) % 3 != 0)[:, None], dtype=np.float32)
    return X, Y


def test_write_read_round_trip_is_exact(tmp_path):
    # values are written with enough digits to read back as the same float32
    X, Y = tricky_matrices()
    write_xc(tmp_path / "a.txt", X, Y)
    X2, Y2 = read_xc(tmp_path / "a.txt")
    assert X2.shape == X.shape and Y2.shape == Y.shape
    np.testing.assert_array_equal(X2.toarray(), X.toarray())
    np.testing.assert_array_equal(Y2.toarray(), Y.toarray())


def test_write_xc_is_byte_identical(tmp_path):
    # the same matrices give the same bytes, and rewriting a file read back changes nothing
    X, Y = tricky_matrices()
    write_xc(tmp_path / "a.txt", X, Y)
    write_xc(tmp_path / "b.txt", X.tocoo(), Y.toarray())
    write_xc(tmp_path / "c.txt", *read_xc(tmp_path / "a.txt"))
    a = (tmp_path / "a.txt").read_bytes()
    assert a == (tmp_path / "b.txt").read_bytes() == (tmp_path / "c.txt").read_bytes()


def test_write_xc_format(tmp_path):
    # the exact text: 1.0 as '1', a point without labels starts with a space, no trailing spaces
    X = sp.csr_matrix(np.array([[1.0, 0, 0.5], [0, 0.25, 0], [0, 0, 0]], dtype=np.float32))
    Y = sp.csr_matrix(np.array([[1, 0], [0, 0], [1, 1]], dtype=np.float32))
    write_xc(tmp_path / "t.txt", X, Y)
    assert (tmp_path / "t.txt").read_text() == "3 3 2\n0 0:1 2:0.5\n 1:0.25\n0,1\n"


def test_write_xc_rejects_mismatched_rows(tmp_path):
    with pytest.raises(ValueError, match="X has 3 rows but Y has 2"):
        write_xc(tmp_path / "t.txt", sp.eye(3, format="csr"), sp.eye(2, format="csr"))


# ----------------------------------------------------------------------------
# name files

def test_names_round_trip(tmp_path):
    names = ["alpha", "two words", "ünïcødé", "x"]
    write_names(tmp_path / "labels.txt", names)
    assert read_names(tmp_path / "labels.txt", 4, "label") == names


def test_read_names_count_mismatch(tmp_path):
    write_names(tmp_path / "labels.txt", ["a", "b"])
    with pytest.raises(DatasetFormatError, match=r"labels\.txt: expected 3 label names, found 2"):
        read_names(tmp_path / "labels.txt", 3, "label")


@pytest.mark.parametrize("content, words", [
    (b"\xef\xbb\xbf", "no content: only a byte-order mark"),
    (b"\n\n\n", "no content: only whitespace"),
    ("a\nb\nc\n".encode("utf-16"), "UTF-16 byte-order mark"),
], ids=["bom-only", "blank-lines", "utf16"])
def test_read_names_rejects_degenerate_files(tmp_path, content, words):
    (tmp_path / "labels.txt").write_bytes(content)
    with pytest.raises(DatasetFormatError, match=r"labels\.txt") as info:
        read_names(tmp_path / "labels.txt", 3, "label")
    assert words in str(info.value)


def test_read_names_rejects_non_utf8(tmp_path):
    (tmp_path / "features.txt").write_bytes(b"a\nb\xe9\n")
    with pytest.raises(DatasetFormatError, match=r"features\.txt line 2: not UTF-8"):
        read_names(tmp_path / "features.txt", 2, "feature")
