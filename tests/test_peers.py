"""The peers (engine/bench/peers.py, python -m engine peers): each adapter on a tiny generated set (a
peer whose package is missing here is skipped), the line a missing package gets, the table, the
stored JSON and what a hostile one gets, and the Compare page's peers section."""

import dataclasses
import json
import os
import types

import numpy as np
import pytest
import scipy.sparse as sp

from engine import evaluate, generate, inv_propensity, save_dataset
from engine.__main__ import main
from engine.bench import peers
from engine.bench.peers import (PEERS, Peer, format_peers, read_peer_results, run_peer, run_peers, unavailable,
                                write_peer_results)
from engine.bench.results import format_results
from engine.errors import XMCError

from apptest import app, app_env, assert_clean, page, runs_dir, shown  # noqa: F401  (app_env: autouse)


@pytest.fixture(scope="module")
def tiny():
    return generate(n_points=400, n_features=80, n_labels=40, n_clusters=6, seed=1, name="tiny")


@pytest.fixture(scope="module")
def tiny_dir(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    save_dataset(tiny, path)
    return path


def oracle_peer(Y_test, title="oracle"):
    """A peer needing no package: it predicts each test point's own labels (then -1), so every score is known."""
    def topk(model, X, k, threads):
        return peers._padded([Y_test.indices[Y_test.indptr[i]:Y_test.indptr[i + 1]].tolist()
                              for i in range(X.shape[0])], k)
    return Peer(title, "no-package", "json", "peers", lambda X, Y, threads, seed, workdir: None, topk)


# -----------------------------------------------------------------------------
# the adapters


@pytest.mark.parametrize("name", list(PEERS))
def test_each_peer_learns_the_tiny_set(name, tiny):
    # a real peer trains, returns (N_test, 5) ranked ids, and beats the constant "most frequent labels" ranking
    peer = PEERS[name]
    if unavailable(peer):
        pytest.skip(unavailable(peer))
    row = run_peer(peer, tiny)
    popular = np.argsort(-np.asarray(tiny.Y_train.sum(axis=0)).ravel(), kind="stable")[:5]
    constant = evaluate(tiny.Y_test, np.tile(popular, (tiny.n_test, 1)), ks=(1, 3, 5))
    assert row["P@1"] > constant["P@1"] + 0.2 and row["P@5"] > constant["P@5"]
    assert set(peers.METRICS) <= set(row) and row["train_s"] > 0 and row["predict_s"] > 0
    assert all(0 <= row[m] <= 1 for m in peers.METRICS)


def test_run_peer_scores_with_our_metrics_and_propensities(tiny):
    # the oracle's top-k is the test labels: the row is engine.evaluate's with inv_propensity(Y_train)
    row = run_peer(oracle_peer(tiny.Y_test), tiny)
    top = oracle_peer(tiny.Y_test).topk(None, tiny.X_test, 5, 1)
    expected = evaluate(tiny.Y_test, top, ks=(1, 3, 5), inv_propensity=inv_propensity(tiny.Y_train))
    assert {k: row[k] for k in expected} == expected
    assert row["nDCG@5"] == pytest.approx((np.diff(tiny.Y_test.indptr) > 0).mean())


def test_padded_keeps_the_order_and_fills_short_rows():
    assert peers._padded([[3, 1], [], [0, 1, 2, 4]], 3).tolist() == [[3, 1, -1], [-1, -1, -1], [0, 1, 2]]


def test_pecos_topk_ranks_each_row_by_score():
    # PECOS itself may not install here (it pins numpy<2, scipy<1.14): its conversion, with a fake model
    scores = sp.csr_matrix(np.array([[0.1, 0.9, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0], [0.3, 0.0, 0.7, 0.0]], np.float32))
    model = types.SimpleNamespace(predict=lambda X, only_topk, threads: scores)
    assert peers._pecos_topk(model, None, 3, 1).tolist() == [[1, 3, 0], [-1, -1, -1], [2, 0, -1]]


# -----------------------------------------------------------------------------
# a missing package


def test_a_missing_package_gets_one_line_naming_the_install():
    line = unavailable(dataclasses.replace(PEERS["omikuji"], module="no_such_module_xmc"))
    assert line == ("Omikuji (Parabel): skipped, omikuji is not installed: pip install '.[peers]' "
                    "(or pip install omikuji)")


def test_a_package_that_does_not_import_is_named_with_its_error(monkeypatch):
    # libpecos 1.2.8 installed beside scipy 1.17 fails so at its import
    def broken(name):
        raise AttributeError("scipy.sparse.sputils has no attribute get_index_dtype")
    monkeypatch.setattr(peers.importlib, "import_module", broken)
    line = unavailable(PEERS["pecos"])
    assert line.startswith("PECOS XR-Linear: skipped, libpecos does not import (AttributeError: scipy.sparse")
    assert "pip install '.[pecos]'" in line


def test_the_other_peers_still_run_when_one_is_missing(tiny, tiny_dir, monkeypatch):
    monkeypatch.setattr(peers, "PEERS", {"gone": dataclasses.replace(oracle_peer(tiny.Y_test, "gone"),
                                                                     module="no_such_xmc"),
                                         "oracle": oracle_peer(tiny.Y_test)})
    lines = []
    rows = run_peers([tiny_dir], log=lines.append)
    assert list(rows) == [(tiny_dir.name, "oracle")] and rows[tiny_dir.name, "oracle"]["P@1"] > 0.9
    assert lines[0].startswith("gone: skipped, no-package is not installed: pip install '.[peers]'")


def test_no_runnable_peer_is_an_error_and_writes_nothing(tiny, tiny_dir, tmp_path, monkeypatch, capsys):
    gone = dataclasses.replace(oracle_peer(tiny.Y_test, "gone"), module="no_such_xmc")
    monkeypatch.setattr(peers, "PEERS", {"gone": gone})
    out = tmp_path / "peers.json"
    out.write_text("kept")
    assert main(["peers", "--data", str(tiny_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("gone: skipped, no-package is not installed") and "none of the peers" in err[1]
    assert out.read_text() == "kept"


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_bad_threads_are_refused_before_any_work(threads, tiny_dir):
    with pytest.raises(XMCError, match="threads must be an integer >= 1"):
        run_peers([tiny_dir], threads=threads)


def test_a_bad_dataset_is_refused_before_any_peer_trains(tiny, tiny_dir, tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(peers, "PEERS", {"oracle": dataclasses.replace(
        oracle_peer(tiny.Y_test), fit=lambda *a: trained.append(1))})
    with pytest.raises(XMCError, match="no such dataset directory"):
        run_peers([tiny_dir, tmp_path / "missing"])
    assert not trained


# -----------------------------------------------------------------------------
# the table and the stored results


def test_the_table_is_the_results_tables_format():
    row = {"P@1": 0.5, "P@3": 0.4, "P@5": 0.3, "nDCG@1": 0.5, "nDCG@3": 0.45, "nDCG@5": 0.42, "PSP@1": 0.2,
           "PSP@3": 0.25, "PSP@5": 0.3, "train_s": 1.234, "predict_s": 0.5}
    assert format_peers({("bibtex", "Omikuji (Parabel)"): row}).splitlines() == [
        "| dataset | configuration | P@1 | P@3 | P@5 | nDCG@3 | nDCG@5 | PSP@1 | PSP@3 | PSP@5 | train s | predict s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        "| bibtex | Omikuji (Parabel) | 50.00 | 40.00 | 30.00 | 45.00 | 42.00 | 20.00 | 25.00 | 30.00 | 1.23 | 0.50 |"]
    # and the results table, formatted by the same function, reads as before
    assert format_results({("bibtex", "dense"): {**row, "head_mb": 1.5, "s_per_epoch": 2.0}}).splitlines()[2] == \
        "| bibtex | dense | 50.00 | 40.00 | 30.00 | 1.50 MB | 2.00 |"


def test_results_round_trip(tmp_path):
    rows = {("bibtex", "napkinXC PLT"): {"P@1": 0.63, "P@5": 0.28, "PSP@5": 0.5, "train_s": 7.0, "predict_s": 0.2}}
    path = tmp_path / "sub" / "peers.json"
    write_peer_results(rows, path, "python -m engine peers --data bibtex", 1)
    stored = read_peer_results(path)
    assert stored == {"command": "python -m engine peers --data bibtex", "threads": 1,
                      "rows": [{"dataset": "bibtex", "peer": "napkinXC PLT", **rows["bibtex", "napkinXC PLT"]}]}


GOOD_ROW = {"dataset": "bibtex", "peer": "Omikuji", "P@1": 0.6, "train_s": 1.0, "predict_s": 0.1}


@pytest.mark.parametrize("text, problem", [
    ("", "not valid JSON"),
    ("[1, 2]", "not a peers' results file"),
    ('{"format": "xmc-lab peers 1", "command": "x"}', "needs a \"command\" string and a \"rows\" list"),
    ('{"format": "xmc-lab peers 1", "command": "x", "rows": [7]}', "row 0: expected an object, got int"),
    ('{"format": "xmc-lab peers 1", "command": "x", "rows": [{"P@1": NaN}]}', "not valid JSON"),
    (json.dumps({"format": "xmc-lab peers 1", "command": "x", "rows": [{**GOOD_ROW, "peer": ""}]}),
     "row 0: \"peer\" must be a non-empty string"),
    (json.dumps({"format": "xmc-lab peers 1", "command": "x", "rows": [{**GOOD_ROW, "P@1": 63.5}]}),
     "row 0: \"P@1\" is a fraction in \\[0, 1\\], got 63.5"),
    (json.dumps({"format": "xmc-lab peers 1", "command": "x", "rows": [GOOD_ROW, {**GOOD_ROW, "train_s": -1}]}),
     "row 1: \"train_s\" must be a finite number >= 0, got -1"),
    (json.dumps({"format": "xmc-lab peers 1", "command": "x", "rows": [{**GOOD_ROW, "P@5": "high"}]}),
     "row 0: \"P@5\" must be a finite number >= 0, got 'high'"),
    (json.dumps({"format": "xmc-lab peers 1", "command": "x", "rows": [{**GOOD_ROW, "P@5": True}]}),
     "row 0: \"P@5\" must be a finite number >= 0, got True"),
    (json.dumps({"format": "xmc-lab peers 1", "command": "x", "rows": [{"dataset": "d", "peer": "p"}]}),
     "row 0: \"P@1\" is missing"),
])
def test_a_bad_results_file_is_refused_with_its_problem(text, problem, tmp_path):
    path = tmp_path / "peers.json"
    path.write_text(text)
    with pytest.raises(XMCError, match=f"peers.json: .*{problem}"):
        read_peer_results(path)


def test_a_directory_or_a_fifo_in_place_of_the_results_is_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "dir.json").mkdir()
    for name in ("fifo.json", "dir.json"):
        with pytest.raises(XMCError, match=name):
            read_peer_results(tmp_path / name)


# -----------------------------------------------------------------------------
# the command


def test_the_command_prints_the_table_and_writes_json_and_markdown(tiny, tiny_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(peers.PEERS, "oracle", oracle_peer(tiny.Y_test))
    out = tmp_path / "peers.json"
    assert main(["peers", "--data", str(tiny_dir), "--only", "oracle", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f"| {tiny_dir.name} | oracle | " in stdout
    stored = read_peer_results(out)
    assert stored["command"] == f"python -m engine peers --data {tiny_dir} --only oracle --threads 1"
    assert [r["peer"] for r in stored["rows"]] == ["oracle"]
    assert out.with_suffix(".md").read_text() == format_peers(
        {(tiny_dir.name, "oracle"): {k: v for k, v in stored["rows"][0].items() if k not in ("dataset", "peer")}}) + "\n"


@pytest.mark.parametrize("argv, message", [
    (["--only", "parabel"], "invalid choice: 'parabel'"),
    (["--threads", "0"], "threads must be an integer >= 1"),
])
def test_the_command_refuses_bad_flags_in_one_line(argv, message, tiny_dir, tmp_path, capsys):
    assert main(["peers", "--data", str(tiny_dir), "--out", str(tmp_path / "p.json"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "p.json").exists()


# -----------------------------------------------------------------------------
# the app's Compare page


def test_the_compare_page_shows_the_stored_peers(tmp_path, monkeypatch):
    path = tmp_path / "peers.json"
    monkeypatch.setenv("XMC_PEERS_FILE", str(path))
    at = page(app(hidden=64, fanin=16, group_size=16), "compare")
    assert_clean(at)
    assert any("No peers' results stored in peers.json" in shown(i.value) for i in at.info)
    write_peer_results({("sample", "Omikuji <b>x</b>"): {"P@1": 0.61, "P@3": 0.4, "P@5": 0.3, "PSP@5": 0.2,
                                                        "train_s": 10.5, "predict_s": 1.0}}, path, "python -m engine peers *x*", 1)
    at = page(app(hidden=64, fanin=16, group_size=16), "compare")
    assert_clean(at)
    table = at.dataframe[-1].value
    assert table.iloc[0].to_dict() == {"dataset": "sample", "method": "Omikuji <b>x</b>", "P@1": 61.0, "P@3": 40.0,
                                       "P@5": 30.0, "PSP@5": 20.0, "train s": 10.5}
    assert at.selectbox(key="tta_dataset").options == ["sample"]              # time to accuracy, per dataset
    path.write_text('{"format": "xmc-lab peers 1", "command": "x", "rows": [{"dataset": "d"}]}')
    at = page(app(hidden=64, fanin=16, group_size=16), "compare")
    assert_clean(at)
    assert any("do not read" in e.value and "row 0: \"peer\" must be a non-empty string" in shown(e.value) for e in at.error)
