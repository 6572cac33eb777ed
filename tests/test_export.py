"""Runs that travel (engine/export.py): a bundle written, read from another folder by `eval` and the
run store, refused whole when anything in it is wrong; records as TensorBoard scalars; `xmc-lab app`."""

import json
import os
import shutil

import pytest

from engine import RunStore
from engine.errors import BundleError
from engine.__main__ import main
from engine.export import MANIFEST, export_run, open_run, scalars

TINY = ["--data", "sample", "--epochs", "1", "--hidden", "16", "--fanin", "8"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run of one epoch on the bundled sample."""
    root = tmp_path_factory.mktemp("store")
    assert main(["train", "--runs", str(root / "runs"), *TINY]) == 0
    (run,) = RunStore(root / "runs").list()
    return run.path


@pytest.fixture
def bundle(run_dir, tmp_path):
    return export_run(run_dir, tmp_path / "bundle")


def one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_a_bundle_holds_the_runs_files_and_their_checksums(run_dir, bundle):
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["config.json", "labels.txt", "metrics.jsonl", "model.safetensors"]
    for name in ("config.json", "metrics.jsonl", "model.safetensors"):     # copied byte for byte
        assert (bundle / name).read_bytes() == (run_dir / name).read_bytes(), name
    assert manifest["dataset"] == {"data": "sample", "name": "sample_data", "n_features": 1000, "n_labels": 2000}
    assert len((bundle / "labels.txt").read_text().splitlines()) == 2000
    assert sorted(p.name for p in bundle.iterdir()) == sorted([*manifest["files"], MANIFEST])   # no temp left


def test_eval_reads_a_bundle_from_another_folder(run_dir, bundle, tmp_path, monkeypatch, capsys):
    # the same scores as the run it came from, from a folder that holds neither
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["eval", "--run", str(run_dir)]) == 0
    at_home = capsys.readouterr().out.split("test: ")[1]
    assert main(["eval", "--run", str(bundle)]) == 0
    assert capsys.readouterr().out.split("test: ")[1] == at_home


def test_the_run_store_lists_a_bundle_as_a_run(bundle):
    # the app reads runs through RunStore.entries(): a bundle put in a runs folder is one more run
    (entry,) = RunStore(bundle.parent).entries()
    assert entry.error is None and entry.config.data == "sample" and entry.records


def test_a_bundle_exports_again(bundle, tmp_path):
    again = export_run(bundle, tmp_path / "again")
    assert (again / "model.safetensors").read_bytes() == (bundle / "model.safetensors").read_bytes()


# ---------------------------------------------------------------------------------------------
# a hostile bundle: refused by open_run (and so by eval) with the file and the problem


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def _edit_manifest(change):
    def edit(bundle):
        m = json.loads((bundle / MANIFEST).read_text())
        change(m)
        (bundle / MANIFEST).write_text(json.dumps(m))
    return edit


def _symlink(name):
    def edit(bundle):
        (bundle / name).rename(bundle.parent / name)
        (bundle / name).symlink_to(bundle.parent / name)   # the very bytes, but through a link
    return edit


HOSTILE = {
    "missing file": (lambda b: (b / "metrics.jsonl").unlink(), "metrics.jsonl: no such file"),
    "changed file": (lambda b: _flip_last_byte(b / "model.safetensors"), "SHA-256 .* differs"),
    "longer file": (lambda b: open(b / "metrics.jsonl", "a").write("{}\n"), "bytes, the manifest says"),
    "unlisted file": (_edit_manifest(lambda m: m["files"].pop("labels.txt")), "labels.txt: is not listed"),
    "manifest not JSON": (lambda b: (b / MANIFEST).write_text("{"), "manifest.json: "),
    "manifest of something else": (_edit_manifest(lambda m: m.update(format="zip")), "not a manifest"),
    "manifest of a newer version": (_edit_manifest(lambda m: m.update(version=2)), "bundle version 2"),
    "unknown file name": (_edit_manifest(lambda m: m["files"].update({"../x": m["files"]["config.json"]})),
                          r"unknown files \['../x'\]"),
    "file not listed as required": (_edit_manifest(lambda m: m["files"].pop("config.json")),
                                    "does not list config.json"),
    "bad entry": (_edit_manifest(lambda m: m["files"]["config.json"].update(sha256="abc")),
                  "entry 'config.json' must be"),
    "files not an object": (_edit_manifest(lambda m: m.update(files=[])), '"files" must be an object'),
    "symlinked checkpoint": (_symlink("model.safetensors"), "model.safetensors: is a symlink"),
    "symlinked manifest": (_symlink(MANIFEST), "manifest.json: is a symlink"),
    "FIFO for config": (lambda b: ((b / "config.json").unlink(), os.mkfifo(b / "config.json")), "is a FIFO"),
    "directory for records": (lambda b: ((b / "metrics.jsonl").unlink(), (b / "metrics.jsonl").mkdir()),
                              "metrics.jsonl: is a directory"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_a_hostile_bundle_is_refused(bundle, case, capsys):
    spoil, message = HOSTILE[case]
    spoil(bundle)
    with pytest.raises(BundleError, match=message):
        open_run(bundle)
    assert main(["eval", "--run", str(bundle)]) == 2
    one_line_error(capsys)


# ---------------------------------------------------------------------------------------------
# what an export refuses: one line, exit 2, nothing written


def test_an_export_never_overwrites(run_dir, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert main(["export", "--run", str(run_dir), "--to", str(tmp_path / "full")]) == 2
    assert "is not empty" in one_line_error(capsys)
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("mine")
    assert main(["export", "--run", str(run_dir), "--to", str(tmp_path / "file")]) == 2
    assert "is not a directory" in one_line_error(capsys) and (tmp_path / "file").read_text() == "mine"
    (tmp_path / "empty").mkdir()                                   # an empty folder is taken
    assert main(["export", "--run", str(run_dir), "--to", str(tmp_path / "empty")]) == 0
    assert (tmp_path / "empty" / MANIFEST).is_file()


def _copy_run(run_dir, tmp_path):
    copy = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, copy)
    return copy


BAD_RUNS = {
    "no run": (lambda r: shutil.rmtree(r), "no such run directory"),
    "no config": (lambda r: (r / "config.json").unlink(), "not a run"),
    "bad config": (lambda r: (r / "config.json").write_text('{"data": 1'), "config.json"),
    "bad record": (lambda r: open(r / "metrics.jsonl", "a").write("[1]\n"), "metrics.jsonl line"),
    "no checkpoint": (lambda r: (r / "model.safetensors").unlink(), "no checkpoint"),
    "pickled checkpoint": (lambda r: (r / "model.safetensors").write_bytes(b"\x80\x04K\x01."), "model.safetensors"),
    "dataset gone": (lambda r: (r / "config.json").write_text(
        (r / "config.json").read_text().replace('"sample"', '"no-such-folder"')), "no-such-folder"),
}


@pytest.mark.parametrize("case", BAD_RUNS, ids=list(BAD_RUNS))
def test_a_bad_run_is_one_line_and_nothing_is_written(run_dir, tmp_path, case, capsys):
    run = _copy_run(run_dir, tmp_path)
    spoil, message = BAD_RUNS[case]
    spoil(run)
    assert main(["export", "--run", str(run), "--to", str(tmp_path / "out")]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_export_needs_a_target(run_dir, capsys):
    assert main(["export", "--run", str(run_dir)]) == 2
    assert "--to DIR" in one_line_error(capsys)


# ---------------------------------------------------------------------------------------------
# TensorBoard


def test_the_curves_read_back_with_tensorboards_reader(run_dir, tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    assert main(["export", "--run", str(run_dir), "--tensorboard", str(tmp_path / "tb")]) == 0
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tb" / run_dir.name))
    acc.Reload()
    records = open_run(run_dir).records()
    want = {}
    for tag, value, step in scalars(records):
        want.setdefault(tag, []).append((step, value))
    assert {"step/loss", "eval/P@1", "eval/nDCG@5"} <= set(want) == set(acc.Tags()["scalars"])
    for tag, points in want.items():
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in points], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6), tag   # float32


def test_tensorboard_export_never_overwrites(run_dir, tmp_path, capsys):
    (tmp_path / "tb" / run_dir.name).mkdir(parents=True)
    (tmp_path / "tb" / run_dir.name / "events.out.tfevents.x").write_text("mine")
    assert main(["export", "--run", str(run_dir), "--tensorboard", str(tmp_path / "tb")]) == 2
    assert "is not empty" in one_line_error(capsys)


def test_scalars_are_the_numbers_of_the_records():
    records = [{"kind": "step", "step": 1, "epoch": 1, "loss": 2.5, "step_time": 0.1},
               {"kind": "eval", "step": 1, "P@1": 0.5, "note": "x"},
               {"kind": "dst", "step": 2, "churn": [1, 2], "zeta": 0.3, "dropped": 4, "flag": True}]
    assert list(scalars(records)) == [("step/loss", 2.5, 1), ("step/step_time", 0.1, 1), ("eval/P@1", 0.5, 1),
                                      ("dst/zeta", 0.3, 2), ("dst/dropped", 4, 2)]


# ---------------------------------------------------------------------------------------------
# `xmc-lab app`


def test_app_hands_over_to_the_launcher_with_the_runs_here(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "execve", lambda exe, argv, env: calls.append((argv, env)) or 0)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("XMC_RUNS_DIR", raising=False)
    main(["app", "--server.port", "8502"])
    (argv, env), = calls
    assert argv[1:] == ["-m", "app", "--server.port", "8502"] and env["XMC_RUNS_DIR"] == str(tmp_path / "runs")
    monkeypatch.setenv("XMC_RUNS_DIR", "/elsewhere")
    main(["app"])
    assert calls[1][1]["XMC_RUNS_DIR"] == "/elsewhere"
