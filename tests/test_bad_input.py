"""The bad-input corpus: dataset files, configs and command lines that must fail cleanly.

Each case asserts the engine's own exception type (an XMCError subclass) and a message that
names the problem; through the CLI, one line on stderr starting `error:` and exit code 2.
The reader's line-level cases (every way a point line can be malformed) are in test_data.py;
here files go through the whole path a user takes: a dataset directory, `load_dataset`, and
`python -m engine train --data DIR`. tests/test_app.py feeds the same cases to the app's pages.
"""

import json

import pytest

from engine.__main__ import main
from engine.data import load_dataset
from engine.errors import ConfigError, DatasetFormatError, XMCError
from engine.guard import MemoryBudgetError
from engine import CheckpointError, Run, RunNotFoundError, RunStore
from engine import TrainConfig

OK_TRAIN = b"4 5 3\n0 1:1 2:0.5\n1,2 0:1\n 3:0.25\n2 4:1\n"
OK_TEST = b"2 5 3\n0 1:1\n2 4:0.5\n"


def huge_line(n=200_000):
    """A valid point line of n features whose last token is broken."""
    return b"1 300000 2\n0 " + b" ".join(b"%d:0.5" % i for i in range(n)) + b" 7:\n"


# (id, file name, its bytes, words the message must contain); the other files are valid
DATASET_CASES = [
    ("empty-train", "train.txt", b"", "train.txt: empty file"),
    ("truncated-mid-line", "train.txt", OK_TRAIN[:-9], "expected 4 points, found 3"),
    ("truncated-mid-token", "train.txt", b"2 5 3\n0 1:1\n1 2", "bad feature '2', expected id:value"),
    ("header-counts-too-many-points", "train.txt", b"9 5 3\n0 1:1\n", "expected 9 points, found 1"),
    ("header-counts-too-few-points", "train.txt", b"1 5 3\n0 1:1\n1 2:1\n", "extra line after the 1 points"),
    ("header-missing", "train.txt", b"0 1:1\n1 2:1\n", "header must be"),
    ("header-words", "train.txt", b"points features labels\n0 1:1\n", "num_points must be a positive integer"),
    ("label-out-of-range", "train.txt", b"1 5 3\n3 1:1\n", "label id 3 >= num_labels 3"),
    ("feature-out-of-range", "train.txt", b"1 5 3\n0 5:1\n", "feature id 5 >= num_features 5"),
    ("id-beyond-int32", "train.txt", b"1 5 3\n0 4294967296:1\n", "feature id 4294967296 >= num_features 5"),
    ("value-nan", "train.txt", b"1 5 3\n0 1:NaN\n", "is not finite"),
    ("value-inf", "test.txt", b"1 5 3\n0 1:inf\n", "is not finite"),
    ("value-overflow", "train.txt", b"1 5 3\n0 1:1e400\n", "out of float32 range"),
    ("huge-line-broken-at-the-end", "train.txt", huge_line(), "bad value '' in '7:'"),
    ("binary-garbage", "train.txt", bytes(range(256)) * 64, "binary data (NUL byte)"),
    ("gzip-file", "train.txt", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(40), "binary data"),
    ("non-utf8-latin1", "train.txt", b"1 5 3\n0 1:1 caf\xe9\n", "not UTF-8 text (byte 0xe9)"),
    ("non-utf8-utf16", "train.txt", "1 5 3\n0 1:1\n".encode("utf-16"), "binary data (NUL byte)"),
    ("test-header-disagrees", "test.txt", b"1 6 3\n0 1:1\n", "6 features"),
    ("labels-file-count", "labels.txt", b"a\nb\n", "expected 3 label names, found 2"),
    ("labels-file-binary", "labels.txt", b"a\x00\nb\nc\n", "binary data"),
    ("features-file-non-utf8", "features.txt", b"a\nb\n\xff\nd\ne\n", "not UTF-8"),
]


def dataset_dir(tmp_path, name, content):
    root = tmp_path / "data"
    root.mkdir()
    (root / "train.txt").write_bytes(OK_TRAIN)
    (root / "test.txt").write_bytes(OK_TEST)
    (root / name).write_bytes(content)
    return root


def test_the_valid_base_dataset_loads(tmp_path):
    ds = load_dataset(dataset_dir(tmp_path, "labels.txt", b"a\nb\nc\n"))
    assert (ds.n_train, ds.n_test, ds.n_features, ds.n_labels) == (4, 2, 5, 3)


@pytest.mark.parametrize("name, content, words", [c[1:] for c in DATASET_CASES], ids=[c[0] for c in DATASET_CASES])
def test_bad_dataset_file(tmp_path, capsys, name, content, words):
    root = dataset_dir(tmp_path, name, content)
    with pytest.raises(DatasetFormatError) as e:
        load_dataset(root)
    assert words in str(e.value) and name in str(e.value)
    # the same through the CLI: one line, exit code 2, no run created
    assert main(["train", "--data", str(root), "--runs", str(tmp_path / "runs"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err
    assert not (tmp_path / "runs").exists()


# (id, words the message must contain): dataset directories laid out wrong
LAYOUT_CASES = [
    ("missing-dir", "no such dataset directory"),
    ("missing-test", "test.txt: missing file"),
    ("train-is-a-directory", "train.txt: is a directory, expected a regular file"),
    ("a-file-not-a-dir", "no such dataset directory"),
]


def bad_layout(tmp_path, layout):
    """The dataset path of a LAYOUT_CASES layout."""
    root = tmp_path / "data"
    if layout == "missing-test":
        root.mkdir()
        (root / "train.txt").write_bytes(OK_TRAIN)
    elif layout == "train-is-a-directory":
        root.mkdir()
        (root / "train.txt").mkdir()
        (root / "test.txt").write_bytes(OK_TEST)
    elif layout == "a-file-not-a-dir":
        root.write_bytes(OK_TRAIN)
    return root


@pytest.mark.parametrize("layout, words", LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES])
def test_bad_dataset_layout(tmp_path, layout, words):
    with pytest.raises(DatasetFormatError, match=words):
        load_dataset(bad_layout(tmp_path, layout))


# ----------------------------------------------------------------------------
# configs: TrainConfig.from_dict, as a config.json import or a stored run gives it

CONFIG_CASES = [
    ("epochs-word", {"epochs": "ten"}, "epochs must be an int, got str 'ten'"),
    ("batch-float", {"batch_size": 3.5}, "batch_size must be an int, got float 3.5"),
    ("hidden-none", {"hidden": None}, "hidden must be an int, got NoneType"),
    ("seed-bool", {"seed": True}, "seed must be an int, got bool"),
    ("lr-word", {"lr": "fast"}, "lr must be a float, got str 'fast'"),
    ("lr-nan", {"lr": float("nan")}, "lr must be a finite number"),
    ("lr-inf", {"lr": float("inf")}, "lr must be a finite number"),
    ("lr-negative", {"lr": -0.1}, "lr must be > 0"),
    ("normalize-string", {"normalize": "yes"}, "normalize must be a bool, got str 'yes'"),
    ("head-number", {"head": 3}, "head must be a str, got int 3"),
    ("head-unknown", {"head": "transformer"}, "head must be one of"),
    ("epochs-negative", {"epochs": -3}, "epochs must be >= 1, got -3"),
    ("batch-zero", {"batch_size": 0}, "batch_size must be >= 1"),
    ("dropout-one", {"dropout": 1.0}, "dropout must be in [0, 1)"),
    ("eval-every-negative", {"eval_every": -1}, "eval_every must be >= 0"),
    ("aux-until-big", {"aux_until": 2.0}, "aux_until must be in (0, 1]"),
    ("groups-unknown", {"groups": "kmeans"}, "groups must be one of"),
    ("fanin-list", {"fanin": [1, 2]}, "fanin must be an int, got list"),
    ("unknown-keys", {"epoch": 3, "learning_rate": 0.1}, "unknown config keys: epoch, learning_rate"),
]


@pytest.mark.parametrize("d, words", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_bad_config(d, words):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict(d)
    assert words in str(e.value)


NOT_OBJECTS = [[1, 2], "epochs=3", None]       # configs that are JSON but no object


def test_config_that_is_not_an_object():
    for d in NOT_OBJECTS:
        with pytest.raises(ConfigError, match="a config must be a JSON object"):
            TrainConfig.from_dict(d)


def test_numbers_of_the_right_kind_are_accepted():
    import numpy as np
    c = TrainConfig.from_dict({"epochs": np.int64(3), "lr": 1, "dropout": np.float32(0.5), "normalize": np.bool_(1)})
    assert (c.epochs, c.lr, c.model.dropout, c.normalize) == (3, 1.0, 0.5, True)
    assert type(c.epochs) is int and type(c.lr) is float and type(c.normalize) is bool
    json.dumps(c.to_dict())


# (id, the text of a stored run's config.json or None for no such file, the exception, its words)
STORED_CONFIG_CASES = [
    ("bad-json", "{not json", ConfigError, "config.json: not valid JSON"),
    ("bad-type", '{"epochs": "ten"}', ConfigError, "config.json: epochs must be an int"),
    ("unknown-key", '{"bogus": 1}', ConfigError, "unknown config keys: bogus"),
    ("missing", None, RunNotFoundError, "not a run (no config.json)"),
]


@pytest.mark.parametrize("text, error, words", [c[1:] for c in STORED_CONFIG_CASES],
                         ids=[c[0] for c in STORED_CONFIG_CASES])
def test_bad_stored_run_config(tmp_path, text, error, words):
    run = RunStore(tmp_path).create(TrainConfig())
    if text is None:
        (run.path / "config.json").unlink()
    else:
        (run.path / "config.json").write_text(text)
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        Run(run.path).config


# (id, the bytes of a stored run's model.safetensors, words)
CHECKPOINT_CASES = [
    ("empty", b"", "truncated: 0 bytes"),
    ("bad-header", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}", "not a valid safetensors checkpoint"),
    ("garbage", b"\xff" * 64, "not a valid safetensors checkpoint"),
]


@pytest.mark.parametrize("content, words", [c[1:] for c in CHECKPOINT_CASES], ids=[c[0] for c in CHECKPOINT_CASES])
def test_bad_checkpoint_file(tmp_path, content, words):
    run = RunStore(tmp_path).create(TrainConfig())
    run.checkpoint_path.write_bytes(content)
    with pytest.raises(CheckpointError, match=words):
        run.checkpoint_step()


# ----------------------------------------------------------------------------
# command lines: main(argv) -> one line on stderr starting "error:", exit code 2

CLI_CASES = [
    ("no-command", [], "the following arguments are required: command"),
    ("unknown-command", ["fly"], "invalid choice: 'fly'"),
    ("unknown-flag", ["train", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
    ("int-word", ["train", "--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
    ("float-word", ["train", "--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    ("bool-word", ["train", "--normalize", "maybe"], "expected true or false, got 'maybe'"),
    ("missing-value", ["train", "--head"], "argument --head: expected one argument"),
    ("head-unknown", ["train", "--head", "bogus"], "argument --head: invalid choice"),
    ("lr-negative", ["train", "--lr", "-1"], "lr must be > 0, got -1.0"),
    ("lr-nan", ["train", "--lr", "nan"], "lr must be a finite number"),
    ("epochs-zero", ["train", "--epochs", "0"], "epochs must be >= 1, got 0"),
    ("dropout-range", ["train", "--dropout", "1.5", "--data", "sample"], "dropout must be in [0, 1)"),
    ("fanin-range", ["train", "--head", "fixed_fanin", "--fanin", "100000", "--hidden", "16"], "fanin must be in [1, 16]"),
    ("data-missing", ["train", "--data", "/nonexistent/dataset"], "/nonexistent/dataset: no such dataset directory"),
    ("seed-huge", ["train", "--seed", str(10**21)], f"seed must be in [0, {2**63 - 1}], got {10**21}"),
    ("eval-k-huge", ["train", "--eval-k", str(10**12)], f"eval_k must be in [1, 1000], got {10**12}"),
    ("backend-unknown", ["train", "--backend", "tpu"], "argument --backend: invalid choice: 'tpu'"),
    ("resume-missing", ["train", "--resume", "/nonexistent/run"], "/nonexistent/run: not a run"),
    ("eval-no-run", ["eval"], "the following arguments are required: --run"),
    ("eval-missing-run", ["eval", "--run", "/nonexistent/run"], "/nonexistent/run: no such run directory"),
    ("generate-no-out", ["generate"], "the following arguments are required: --out"),
    ("generate-bad-int", ["generate", "--out", "x", "--n-points", "many"], "invalid int value: 'many'"),
    ("results-unknown", ["results", "--data", "sample", "--only", "magic"], "unknown configuration(s) ['magic']"),
]


@pytest.mark.parametrize("argv, words", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_bad_command_line(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                          # nothing is written into the repository
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert words in err
    assert not (tmp_path / "runs").exists()


OUTPUT_CASES = [   # output paths that cannot be what they name: "afile" is a regular file, "adir" a folder
    ("runs-a-file", ["train", "--runs", "afile"], "argument --runs: afile: is not a directory"),
    ("runs-under-a-file", ["train", "--runs", "afile/runs"], "afile/runs: cannot be made or written to"),
    ("generate-out-a-file", ["generate", "--out", "afile"], "argument --out: afile: is not a directory"),
    ("generate-out-under-a-file", ["generate", "--out", "afile/x"], "afile/x: cannot be made or written to"),
    ("bench-out-a-folder", ["bench", "--out", "adir"], "adir: is a directory, expected a file name"),
    ("bench-out-under-a-file", ["bench", "--out", "afile/r.json"], "its folder cannot be made or written to"),
    ("results-out-a-folder", ["results", "--data", "sample", "--out", "adir"], "adir: is a directory"),
    ("bench-distributed-out-a-folder", ["bench-distributed", "--out", "adir"], "adir: is a directory"),
]


@pytest.mark.parametrize("argv, words", [c[1:] for c in OUTPUT_CASES], ids=[c[0] for c in OUTPUT_CASES])
def test_an_output_path_that_cannot_be_written_is_refused_before_any_work(argv, words, capsys, tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("keep me")
    (tmp_path / "adir").mkdir()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert (tmp_path / "afile").read_text() == "keep me" and not any((tmp_path / "adir").iterdir())


def test_resume_with_other_settings_is_refused(tmp_path, capsys):
    run = RunStore(tmp_path).create(TrainConfig())
    assert main(["train", "--resume", str(run.path), "--head", "dense", "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --resume continues a run with its own config (only --device may change); drop --epochs, --head\n"


def test_resume_without_a_checkpoint(tmp_path, capsys):
    run = RunStore(tmp_path).create(TrainConfig.of(head="dense", hidden=16, epochs=1))
    assert main(["train", "--resume", str(run.path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model.safetensors: no checkpoint found" in err


def test_every_error_is_an_xmc_error():
    for cls in (ConfigError, DatasetFormatError, CheckpointError, RunNotFoundError, MemoryBudgetError):
        assert issubclass(cls, XMCError)


def test_a_backend_this_machine_cannot_run_is_refused(monkeypatch, capsys):
    # where CuPy sees no GPU, backend='cuda' is a one-line error, not a silent run on the CPU
    monkeypatch.setattr("engine.heads.cuda.available", lambda: (False, "CuPy sees no GPU"))
    assert main(["train", "--data", "sample", "--backend", "cuda", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: backend='cuda' cannot run on this machine (CuPy sees no GPU); use backend 'auto' or 'cpu'\n"
