"""The command line: generate, train, eval; bad input gives one line and exit code 2."""

import json
import subprocess
import sys

import pytest

from engine import PRESETS
from engine.__main__ import main


def test_generate_train_eval(tmp_path, capsys):
    data, runs = tmp_path / "tiny", tmp_path / "runs"
    assert main(["generate", "--out", str(data), "--n-points", "300", "--n-features", "40",
                 "--n-labels", "30", "--n-clusters", "3", "--seed", "1"]) == 0
    assert (data / "train.txt").exists() and (data / "labels.txt").exists()
    assert main(["train", "--data", str(data), "--runs", str(runs), "--head", "group_shared",
                 "--hidden", "16", "--fanin", "4", "--group-size", "4", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "test: P@1" in out and "s/epoch" in out
    (run,) = runs.iterdir()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["kind"] == "eval"
    assert main(["eval", "--run", str(run)]) == 0
    assert f"P@1 {100 * records[-1]['P@1']:.2f}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "/nonexistent/dir"], "/nonexistent/dir"),
    (["train", "--data", "sample", "--head", "bogus"], "argument --head: invalid choice: 'bogus'"),
    (["train", "--data", "sample", "--epochs", "0"], "epochs must be >= 1"),
    (["eval", "--run", "/nonexistent/run"], "/nonexistent/run"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_module_entry_point_exit_code():
    proc = subprocess.run([sys.executable, "-m", "engine", "train", "--epochs", "zero"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid int value" in proc.stderr


def test_lss_command_prints_both_indexes(capsys):
    assert main(["lss", "--labels", "300", "--points", "600", "--features", "200", "--clusters", "10",
                 "--tables", "4", "--bits", "4", "--fit-epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "simhash" in out and "learned" in out and "bar (" in out


def test_a_preset_sets_its_settings_and_the_flags_override_it():
    from engine.__main__ import build_parser, train_settings
    args = build_parser().parse_args(["train", "--preset", "tiny", "--fanin", "8"])
    assert train_settings(args) == {**PRESETS["tiny"], "fanin": 8}
    assert main(["train", "--preset", "nope"]) == 2

