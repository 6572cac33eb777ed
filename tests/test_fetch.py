"""Tests for engine/data/fetch.py and what it uses (registry, download, archive, arff, convert): a
dataset fetched from a local HTTP server on 127.0.0.1 (no network), checked, converted, cached.

The real registry is reached through XMC_FETCH_MIRROR (the server plays every host); entries of
the tests' own are passed as `registry=`. XMC_DATA_HOME points the cache at a temporary folder.
"""

import bz2
import hashlib
import http.server
import io
import json
import re
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from engine.__main__ import main
from engine.data import download as download_module
from engine.data import load_dataset, resolve_dataset
from engine.data.archive import extract_members
from engine.data.arff import read_arff, read_label_names
from engine.data.convert import read_libsvm
from engine.errors import FetchError
from engine.data.fetch import MIRROR_ENV, RECORDS, check_source, fetch, find_source
from engine.data.registry import SOURCES, RemoteFile, Source
from engine.errors import DatasetFormatError

# ----------------------------------------------------------------------------
# a toy MULAN set, worked by hand: columns 'word one' (numeric), colour {red,green,blue} (one-hot),
# flag {NO,YES} (one feature), labels L0 and L'1. Features: 0 'word one', 1-3 colour=..., 4 flag.

TRAIN_ARFF = b"""% a comment
@relation toy
@attribute 'word one' numeric
@attribute colour {red,green,blue}
@attribute flag {NO,YES}
@attribute L0 {0,1}
@attribute 'L\\'1' {0,1}

@data
{0 0.5,1 green,3 1}
{2 YES,4 1}
{}
"""
# row 1: word one 0.5, colour green, flag NO (omitted: first value), L0
# row 2: colour red (omitted: first value), flag YES, L'1
# row 3: colour red, nothing else
TEST_ARFF = TRAIN_ARFF.split(b"@data")[0] + b"@data\n0.25,blue,NO,1,1\n0,'red',YES,0,0\n"
LABELS_XML = (b'<?xml version="1.0" encoding="utf-8"?>\n<labels xmlns="http://mulan.sourceforge.net/labels">'
              b'<label name="L0"></label><label name="L\'1"></label></labels>\n')
X_TRAIN = [[0.5, 0, 1, 0, 0], [0, 1, 0, 0, 1], [0, 1, 0, 0, 0]]
Y_TRAIN = [[1, 0], [0, 1], [0, 0]]
X_TEST = [[0.25, 0, 0, 1, 0], [0, 1, 0, 0, 1]]
Y_TEST = [[1, 1], [0, 0]]
FEATURES = ["word one", "colour=red", "colour=green", "colour=blue", "flag"]


def sha(data):
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------
# the server: serves `files` {path: bytes}; `ranges` whether it honours Range; `drop` {path: bytes
# to send before cutting the connection, for that many requests}; `log` the (path, Range) asked

class Server:
    def __init__(self):
        self.files, self.ranges, self.drop, self.drops, self.log, self.redirect = {}, True, {}, {}, [], {}

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"


def _handler(server):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            server.log.append((self.path, self.headers.get("Range")))
            if self.path in server.redirect:
                self.send_response(302)
                self.send_header("Location", server.redirect[self.path])
                self.end_headers()
                return
            data = server.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            asked = self.headers.get("Range")
            if asked and server.ranges:
                start = int(asked.removeprefix("bytes=").rstrip("-"))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            body = data[start:]
            if server.drops.get(self.path, 0) > 0:          # cut the connection part-way
                server.drops[self.path] -= 1
                body = body[:server.drop[self.path]]
                self.close_connection = True
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server():
    s = Server()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(s))
    s.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield s
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    home = tmp_path / "cache"
    monkeypatch.setenv("XMC_DATA_HOME", str(home))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.setattr(download_module, "BACKOFF_S", 0.0)
    return home


def toy_source(server, name="toy", pinned=True, files=None):
    """A MULAN-format entry served by `server` (its files registered there)."""
    files = files or {"train": TRAIN_ARFF, "test": TEST_ARFF, "labels": LABELS_XML}
    remote = []
    for role, data in files.items():
        server.files[f"/{name}/{role}"] = data
        remote.append(RemoteFile(role, server.url(f"/{name}/{role}"), len(data), sha(data) if pinned else None))
    return Source(name, "mulan-arff", tuple(remote), "a toy")


def cache_is_clean(home, *datasets):
    """Only the named dataset folders (and the records) are in the cache: no download, no scratch."""
    left = sorted(p.name for p in home.iterdir()) if home.exists() else []
    downloads = sorted(p.name for p in (home / ".downloads").iterdir()) if (home / ".downloads").exists() else []
    return [n for n in left if n not in (".downloads", RECORDS)] == sorted(datasets) and downloads == []


# ----------------------------------------------------------------------------
# a good download

def test_a_good_download_is_converted_and_loads(server, cache):
    source = toy_source(server)
    path = fetch("TOY", registry={"toy": source}, progress=False)       # any case
    assert path == cache / "toy"
    ds = load_dataset(path)
    assert (ds.X_train.toarray() == X_TRAIN).all() and (ds.Y_train.toarray() == Y_TRAIN).all()
    assert (ds.X_test.toarray() == X_TEST).all() and (ds.Y_test.toarray() == Y_TEST).all()
    assert ds.label_names == ["L0", "L'1"] and ds.feature_names == FEATURES
    provenance = json.loads((path / "source.json").read_text())
    assert [f["sha256"] for f in provenance["files"]] == [f.sha256 for f in source.files]
    assert cache_is_clean(cache, "toy")
    server.log.clear()
    assert fetch("toy", registry={"toy": source}, progress=False) == path and server.log == []   # cached


def test_a_fetched_name_is_a_dataset_reference(server, cache, monkeypatch):
    # mediamill from the real registry, through the mirror: LibSVM text, labels renumbered, features from 1
    monkeypatch.setenv(MIRROR_ENV, server.url("/mirror"))
    train = b"0,7 1:0.5 3:2\n7 2:1\n 3:1\n"
    test = b"3 1:1\n0,3,7\n"
    for f, data in zip(SOURCES["mediamill"].files, (train, test)):
        server.files["/mirror/" + f.url.split("://", 1)[1]] = bz2.compress(data)
    assert resolve_dataset("mediamill") == cache / "mediamill"
    with pytest.raises(DatasetFormatError, match="fetch it: python -m engine fetch mediamill"):
        load_dataset("mediamill")
    assert main(["fetch", "mediamill"]) == 0
    ds = load_dataset("mediamill")
    assert ds.name == "mediamill" and ds.label_names == ["0", "3", "7"]
    assert ds.X_train.toarray().tolist() == [[0.5, 0, 2], [0, 1, 0], [0, 0, 1]]
    assert ds.Y_train.toarray().tolist() == [[1, 0, 1], [0, 0, 1], [0, 0, 0]]
    assert ds.Y_test.toarray().tolist() == [[0, 1, 0], [1, 1, 1]] and ds.X_test.shape == (2, 3)
    assert resolve_dataset("sample").name == "sample_data"
    monkeypatch.chdir(cache.parent)                             # a folder of that name here wins
    (cache.parent / "mediamill").mkdir()
    assert resolve_dataset("mediamill") == Path("mediamill")


# ----------------------------------------------------------------------------
# checksums: pinned, and trust on first download

def test_a_bad_checksum_is_refused_and_nothing_is_cached(server, cache):
    source = toy_source(server)
    server.files["/toy/test"] = TEST_ARFF.replace(b"0.25", b"0.75")         # same size, other bytes
    with pytest.raises(FetchError, match=r"SHA-256 [0-9a-f]{64} differs from .* pinned in the registry"):
        fetch("toy", registry={"toy": source}, progress=False)
    assert cache_is_clean(cache)


def test_a_pinned_real_entry_refuses_other_bytes(server, cache, monkeypatch):
    # bibtex as registered, from a mirror that serves something else: refused, not by editing the registry
    monkeypatch.setenv(MIRROR_ENV, server.url("/mirror"))
    for f in SOURCES["bibtex"].files:
        server.files["/mirror/" + f.url.split("://", 1)[1]] = b"x" * f.size
    with pytest.raises(FetchError, match="pinned in the registry"):
        fetch("bibtex", progress=False)
    assert cache_is_clean(cache)


def test_a_first_download_is_recorded_and_a_changed_file_refused(server, cache):
    source = toy_source(server, pinned=False)
    path = fetch("toy", registry={"toy": source}, progress=False)
    records = json.loads((cache / RECORDS).read_text())
    assert {u: r["sha256"] for u, r in records.items()} == {
        f.url: sha(server.files[f.url.split(str(server.port), 1)[1]]) for f in source.files}
    before = (path / "train.txt").read_bytes()
    server.files["/toy/train"] = TRAIN_ARFF.replace(b"0.5", b"0.7")
    with pytest.raises(FetchError, match="recorded at its first download"):
        fetch("toy", registry={"toy": source}, progress=False, force=True)
    assert (path / "train.txt").read_bytes() == before and cache_is_clean(cache, "toy")   # the old one stays


def test_damaged_records_are_an_error_not_a_fresh_start(server, cache):
    cache.mkdir()
    (cache / RECORDS).write_text("{not json")
    with pytest.raises(FetchError, match="checksums of first downloads"):
        fetch("toy", registry={"toy": toy_source(server, pinned=False)}, progress=False)


# ----------------------------------------------------------------------------
# interrupted downloads

@pytest.mark.parametrize("ranges", [True, False], ids=["resumed", "restarted"])
def test_an_interrupted_download_is_resumed_or_restarted(server, cache, ranges):
    source = toy_source(server)
    server.ranges = ranges
    server.drop, server.drops = {"/toy/train": 100}, {"/toy/train": 2}      # cut twice, at byte 100
    path = fetch("toy", registry={"toy": source}, progress=False)
    asked = [r for p, r in server.log if p == "/toy/train"]
    assert asked == [None, "bytes=100-", "bytes=200-" if ranges else "bytes=100-"]
    assert (load_dataset(path).X_train.toarray() == X_TRAIN).all() and cache_is_clean(cache, "toy")


def test_a_download_that_keeps_failing_leaves_no_dataset_and_resumes_later(server, cache):
    source = toy_source(server)
    server.drop, server.drops = {"/toy/train": 30}, {"/toy/train": download_module.ATTEMPTS}
    with pytest.raises(FetchError, match="failed after 5 attempts"):
        fetch("toy", registry={"toy": source}, progress=False)
    assert not (cache / "toy").exists()
    (part,) = (cache / ".downloads").iterdir()                 # the partial file, kept for the resume
    assert part.stat().st_size == 30 * download_module.ATTEMPTS
    server.log.clear()
    fetch("toy", registry={"toy": source}, progress=False)
    assert ("/toy/train", f"bytes={30 * download_module.ATTEMPTS}-") in server.log
    assert cache_is_clean(cache, "toy")


def test_http_errors_and_foreign_redirects_are_refused(server, cache):
    source = toy_source(server)
    del server.files["/toy/labels"]
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch("toy", registry={"toy": source}, progress=False)
    for target, message in (("ftp://127.0.0.1/x", "not an http"), ("file:///etc/passwd", "is not allowed")):
        server.redirect["/toy/labels"] = target
        with pytest.raises(FetchError, match=message):
            fetch("toy", registry={"toy": source}, progress=False)
    assert cache_is_clean(cache)


def test_a_size_other_than_the_registry_s_is_refused_at_once(server, cache):
    source = toy_source(server)
    server.files["/toy/train"] += b"% more\n"
    with pytest.raises(FetchError, match="announces .* bytes, the registry"):
        fetch("toy", registry={"toy": source}, progress=False)
    assert cache_is_clean(cache)


# ----------------------------------------------------------------------------
# the command line

def test_an_unknown_name_is_exit_2_with_the_list(cache, capsys):
    assert main(["fetch", "no-such-set"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown dataset 'no-such-set'") and err.count("\n") == 1
    assert all(name in err for name in SOURCES)
    assert main(["fetch"]) == 2 and main(["fetch", "bibtex", "--list"]) == 2


def test_list_names_each_source_size_and_checksum_kind(cache, capsys):
    assert main(["fetch", "--list"]) == 0
    out = capsys.readouterr().out
    for s in SOURCES.values():
        assert f"\n{s.name}  " in out
        for f in s.files:
            assert f.url in out and (f.sha256 or "not yet recorded (first download)") in out
    assert "SHA-256 pinned" in out and "SHA-256 of the first download" in out


def test_the_registry_pins_only_what_was_computed_from_the_files(cache):
    for source in SOURCES.values():
        check_source(source)
    pinned = {s.name for s in SOURCES.values() if s.pinned}
    assert pinned == {s.name for s in SOURCES.values() if s.format == "mulan-arff"}
    assert all(f.sha256 is None and f.size is None for s in SOURCES.values() if not s.pinned for f in s.files)
    assert find_source("EURLex-4K").name == "eurlex-4k"


def test_a_bad_registry_entry_is_named():
    good = Source("x", "libsvm", (RemoteFile("train", "https://a/b"), RemoteFile("test", "https://a/c")), "")
    check_source(good)
    bad = [good.__class__("X!", good.format, good.files, ""),
           good.__class__("x", "csv", good.files, ""),
           good.__class__("x", "libsvm", good.files[:1], ""),
           good.__class__("x", "libsvm", (RemoteFile("train", "file:///etc/passwd"), good.files[1]), ""),
           good.__class__("x", "libsvm", (RemoteFile("train", "https://a/b", sha256="ABC"), good.files[1]), "")]
    for source in bad:
        with pytest.raises(FetchError, match="registry entry|not an http"):
            check_source(source)


# ----------------------------------------------------------------------------
# archives: a PECOS xmc-base tar.gz; hostile members refused in tars and zips

def npz(M):
    buf = io.BytesIO()
    sp.save_npz(buf, sp.csr_matrix(M))
    return buf.getvalue()


def pecos_members(root="xmc-base/toy"):
    X = np.array([[0.5, 0, 1], [0, 2, 0]], np.float32)
    Y = np.array([[1, 0], [0, 1]], np.float32)
    return {f"{root}/tfidf-attnxml/X.trn.npz": npz(X), f"{root}/tfidf-attnxml/X.tst.npz": npz(X[::-1]),
            f"{root}/Y.trn.npz": npz(Y), f"{root}/Y.tst.npz": npz(Y), f"{root}/output-items.txt": b"a\nb\n",
            f"{root}/X.trn.txt": b"raw text, not read\n"}


def tar_bytes(members, extra=()):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return buf.getvalue()


def zip_bytes(members, extra=()):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        for info, data in extra:
            z.writestr(info, data)
    return buf.getvalue()


def test_a_pecos_archive_is_converted(server, cache):
    data = tar_bytes(pecos_members())
    server.files["/toy.tar.gz"] = data
    source = Source("toy", "pecos-npz", (RemoteFile("archive", server.url("/toy.tar.gz"), len(data), sha(data)),),
                    "a toy", "xmc-base/toy")
    ds = load_dataset(fetch("toy", registry={"toy": source}, progress=False))
    assert ds.X_train.toarray().tolist() == [[0.5, 0, 1], [0, 2, 0]] and ds.X_test.toarray()[0, 1] == 2
    assert ds.Y_test.toarray().tolist() == [[1, 0], [0, 1]] and ds.label_names == ["a", "b"]
    assert cache_is_clean(cache, "toy")


def _tar_link(name, kind, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _zip_link(name):
    info = zipfile.ZipInfo(name)
    info.create_system, info.external_attr = 3, 0o120777 << 16
    return info


HOSTILE = [
    ("traversal", {"../x": b"1"}, (), "climbs out"),
    ("nested-traversal", {"a/../../x": b"1"}, (), "climbs out"),
    ("absolute", {"/etc/x": b"1"}, (), "absolute path"),
    ("drive-letter", {"C:/x": b"1"}, (), "absolute path"),
    ("backslash", {"a\\..\\x": b"1"}, (), "backslash"),
    ("duplicate", {"a/x": b"1", "a/./x": b"2"}, (), "two members named"),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[c[0] for c in HOSTILE])
@pytest.mark.parametrize("pack", [tar_bytes, zip_bytes], ids=["tar", "zip"])
def test_hostile_archive_members_are_refused(tmp_path, case, pack):
    _, members, _, message = case
    path = tmp_path / "a"
    path.write_bytes(pack({"a/ok": b"fine", **members}))
    with pytest.raises(FetchError, match=message):
        extract_members(path, {"a/ok": tmp_path / "ok"})
    assert {p.name for p in tmp_path.iterdir()} <= {"a", "ok"}       # nothing written under a member's name


@pytest.mark.parametrize("path_name, packed", [
    ("symlink.tar", lambda: tar_bytes({}, [_tar_link("a/ok", tarfile.SYMTYPE, "/etc/passwd")])),
    ("hardlink.tar", lambda: tar_bytes({"b": b"1"}, [_tar_link("a/ok", tarfile.LNKTYPE, "b")])),
    ("fifo.tar", lambda: tar_bytes({}, [_tar_link("a/ok", tarfile.FIFOTYPE, "")])),
    ("symlink.zip", lambda: zip_bytes({}, [(_zip_link("a/ok"), "/etc/passwd")])),
], ids=["tar-symlink", "tar-hardlink", "tar-fifo", "zip-symlink"])
def test_links_and_devices_in_archives_are_refused(tmp_path, path_name, packed):
    path = tmp_path / path_name
    path.write_bytes(packed())
    with pytest.raises(FetchError, match="link|not a regular file"):
        extract_members(path, {"a/ok": tmp_path / "ok"})
    assert not (tmp_path / "ok").exists()


def test_a_hostile_archive_fetched_caches_nothing(server, cache):
    data = tar_bytes({**pecos_members(), "xmc-base/../../evil": b"x"})
    server.files["/toy.tar.gz"] = data
    source = Source("toy", "pecos-npz", (RemoteFile("archive", server.url("/toy.tar.gz"), len(data), sha(data)),),
                    "a toy", "xmc-base/toy")
    with pytest.raises(FetchError, match="climbs out"):
        fetch("toy", registry={"toy": source}, progress=False)
    assert cache_is_clean(cache) and not (cache.parent / "evil").exists()


def test_not_an_archive_and_a_missing_member_are_named(tmp_path, server, cache):
    path = tmp_path / "junk"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(FetchError, match="cannot read it as a tar or zip"):
        extract_members(path, {})
    members = pecos_members()
    del members["xmc-base/toy/Y.tst.npz"]
    data = tar_bytes(members)
    server.files["/toy.tar.gz"] = data
    source = Source("toy", "pecos-npz", (RemoteFile("archive", server.url("/toy.tar.gz"), len(data), sha(data)),),
                    "a toy", "xmc-base/toy")
    with pytest.raises(DatasetFormatError, match="no member xmc-base/toy/Y.tst.npz"):
        fetch("toy", registry={"toy": source}, progress=False)
    assert cache_is_clean(cache)


# ----------------------------------------------------------------------------
# the ARFF and LibSVM readers

def write(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


def test_sparse_and_dense_arff_read_the_same(tmp_path):
    names = read_label_names(write(tmp_path, "l.xml", LABELS_XML))
    dense = TRAIN_ARFF.split(b"@data")[0] + b"@data\n0.5,green,NO,1,0\n0,red,YES,0,1\n0,red,NO,0,0\n"
    a = read_arff(write(tmp_path, "s.arff", TRAIN_ARFF), names)
    b = read_arff(write(tmp_path, "d.arff", dense), names)
    assert (a.X != b.X).nnz == 0 and (a.Y != b.Y).nnz == 0 and a.columns == b.columns
    assert a.X.toarray().tolist() == X_TRAIN and a.feature_names == FEATURES


HEADER = TRAIN_ARFF.split(b"@data")[0]
BAD_ARFF = [
    ("missing-value", HEADER + b"@data\n?,red,NO,1,0\n", 10, "missing value"),
    ("nominal-value", HEADER + b"@data\n0,pink,NO,1,0\n", 10, "'pink' is not one of"),
    ("label-value", HEADER + b"@data\n0,red,NO,2,0\n", 10, "'2' is not one of"),
    ("too-few-values", HEADER + b"@data\n0,red,NO,1\n", 10, "4 values, the header declares 5"),
    ("empty-value", HEADER + b"@data\n0,,NO,1,0\n", 10, "expected one value"),
    ("not-a-number", HEADER + b"@data\nabc,red,NO,1,0\n", 10, "bad number 'abc'"),
    ("infinite", HEADER + b"@data\n1e999,red,NO,1,0\n", 10, "not a finite float32"),
    ("sparse-index", HEADER + b"@data\n{9 1}\n", 10, "column index 9 >= 5"),
    ("sparse-twice", HEADER + b"@data\n{0 1,0 2}\n", 10, "appears twice"),
    ("sparse-weight", HEADER + b"@data\n{0 1},{2}\n", 10, "instance weights"),
    ("sparse-entry", HEADER + b"@data\n{0}\n", 10, "bad sparse entry"),
    ("unbalanced-quote", HEADER + b"@data\n0,'red,NO,1,0\n", 10, "unbalanced quote"),
    ("string-column", b"@attribute s string\n@attribute L0 {0,1}\n@attribute 'L\\'1' {0,1}\n@data\n", 1, "string"),
    ("no-data", HEADER, None, "no @data"),
    ("no-rows", HEADER + b"@data\n", None, "no data rows"),
    ("no-label-column", HEADER.replace(b"L0", b"M0") + b"@data\n", None, "names 'L0', which is not a column"),
    ("label-not-binary", HEADER.replace(b"L0 {0,1}", b"L0 numeric") + b"@data\n", None, "must be nominal {0,1}"),
    ("twice-declared", HEADER.replace(b"flag", b"colour") + b"@data\n", None, "declared twice"),
    ("garbage-line", HEADER + b"hello\n@data\n", 9, "expected @relation, @attribute or @data"),
    ("not-utf8", HEADER + b"@data\n0,r\xffd,NO,1,0\n", 10, "not UTF-8"),
]


@pytest.mark.parametrize("case", BAD_ARFF, ids=[c[0] for c in BAD_ARFF])
def test_a_bad_arff_file_is_named_with_its_line(tmp_path, case):
    _, data, line, message = case
    names = read_label_names(write(tmp_path, "l.xml", LABELS_XML))
    with pytest.raises(DatasetFormatError, match=re.escape(message)) as e:
        read_arff(write(tmp_path, "bad.arff", data), names)
    assert e.value.line == line and e.value.path.endswith("bad.arff")


@pytest.mark.parametrize("data, message", [
    (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><labels><label name="&a;"/></labels>', "DTD"),
    (b"<labels><label name='a'/>", "not well-formed"),
    (b"<labelz/>", "expected <labels>"),
    (b"<labels/>", "lists no <label>"),
    (b"<labels><label name='a'/><label name='a'/></labels>", "appears twice"),
    (b"<labels><label/></labels>", "has no name"),
])
def test_a_bad_label_list_is_refused(tmp_path, data, message):
    with pytest.raises(DatasetFormatError, match=message):
        read_label_names(write(tmp_path, "l.xml", data))


def test_nested_labels_of_a_hierarchy_are_listed_in_order(tmp_path):
    data = b"<labels><label name='a'><label name='a1'/></label><label name='b'/></labels>"
    assert read_label_names(write(tmp_path, "l.xml", data)) == ["a", "a1", "b"]


@pytest.mark.parametrize("data, line, message", [
    (b"0 0:1\n", 1, "feature id 0 out of range"),
    (b"0 1:1 1:2\n", 1, "a feature id appears twice"),
    (b"0 1:1\n1,1 2:1\n", 2, "a label id appears twice"),
    (b"0 1:x\n", 1, "not 'l1,l2 f:v"),
    (b"0 1:1\n\n1 1:1\n", 2, "empty line"),
    (b"0 1:1e39\n", 1, "out of float32 range"),
])
def test_a_bad_libsvm_file_is_named_with_its_line(tmp_path, data, line, message):
    path = write(tmp_path, "bad.svm.bz2", bz2.compress(data))
    with pytest.raises(DatasetFormatError, match=re.escape(message)) as e:
        read_libsvm(path)
    assert e.value.line == line


def test_a_libsvm_file_that_is_not_bzip2_is_named(tmp_path):
    with pytest.raises(DatasetFormatError, match="not a bzip2 file"):
        read_libsvm(write(tmp_path, "plain.svm", b"0 1:1\n"))
