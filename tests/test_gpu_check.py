"""engine/bench/gpu_check.py (`make gpu-check`) without a GPU: its time budget, its tables, its section
of REPORT.md, its parts' processes (time limits, partial results, failures), the parts that also
run on a CPU (the heads benchmark with the FLOP-matched provider, the sample's training), and the
one-line refusal where no GPU is."""

import json
import subprocess
import sys
import time

import pytest

from engine.bench import gpu_check as G
from engine.bench.heads import run_heads_bench
from engine.bench.providers import FLOP_MATCHED
from engine.cuda import report
from engine.device import gpu_status


def test_the_time_left_is_split_among_the_parts_still_to_run():
    shares = {"a": 1, "b": 3, "c": 1}
    assert G.allot(shares, "a", 100) == 20
    assert G.allot(shares, "b", 95) == 95 * 3 / 4                      # a took 5 s: b and c share 95
    assert G.allot(shares, "c", 10) == 10                              # the last part gets what is left
    assert G.allot(shares, "c", -3) == 0
    budget = 300
    left = budget
    for name in G.SHARES:                                              # every part taking all it is given
        left -= G.allot(G.SHARES, name, left)
    assert left == pytest.approx(0, abs=1e-9)


def test_md_table_and_the_part_tables():
    assert G.md_table(["a", "b"], [[1, None]]) == "| a | b |\n|---|---|\n| 1 | - |"
    mem = G.memory_markdown({"torch_peak": 2 * 2**30, "cupy_pool": 2**29, "device_used": 3 * 2**30, "analytic": 2**31})
    assert "| **peak, both** | **2,560** |" in mem and mem.endswith("2.68 GB, met: yes.")
    cpu = {"device": "cpu", "why": "device='cpu' was asked", "steps": 12, "total_steps": 12, "setup_s": 1.0,
           "train_s": 6.0, "P@1": 0.5, "P@5": 0.25, "stopped": False}
    gpu = dict(cpu, device="cuda:0", why="fake GPU", steps=5, train_s=1.0, **{"P@1": 0.515}, stopped=True)
    table = G.train_markdown([gpu, cpu])
    assert "| cuda:0 | fake GPU | 5 of 12 (time limit) | 1.0 | 1.0 | 200.0 | 51.50 | 25.00 |" in table
    assert table.endswith("P@1 cuda:0 - cpu: +1.50 points.")
    out = ("....F.s\nFAILED tests/test_fused.py::test_x[cuda-gpu] - AssertionError\n"
           "1 failed, 5 passed, 1 skipped in 3.2s\n")
    assert G.pytest_markdown(1, out) == ("`pytest -m gpu tests`: 1 failed, 5 passed, 1 skipped in 3.2s (exit code 1).\n"
                                         "- FAILED tests/test_fused.py::test_x[cuda-gpu] - AssertionError")


def _row(kind, L, fwd_bwd):
    return {"kind": kind, "provider": kind, "n_labels": L, "forward_s": None, "fwd_bwd_s": fwd_bwd,
            "step_s": None, "max_rel_err": None}


def test_the_heads_table_and_the_issues_targets():
    L = G.LABEL_COUNTS[-1]
    rows = [_row("nn.Linear", L, 0.050), _row(FLOP_MATCHED, L, 0.010), _row("group-shared", L, 0.011)]
    text = G.heads_markdown(rows)
    assert f"| {L:,} | group-shared | - | 11.00 | - | 4.55 | 0.91 | - |" in text
    assert "| group-shared fwd + bwd, x faster than nn.Linear(d, L) | 4.55 | >= 4.0 | yes |" in text
    assert "| group-shared fwd + bwd time / nn.Linear(k, L)'s | 1.10 | <= 1.2 | yes |" in text
    assert "| 2.00 | >= 4.0 | no |" in G.targets_markdown([_row("nn.Linear", L, 2), _row("group-shared", L, 1)])
    assert G.targets_markdown([]).count("not measured") == 2


def test_the_heads_part_runs_its_providers_on_the_cpu():
    # the GPU part's call on a tiny shape: every provider validated and timed, nn.Linear(k, L) included
    providers = ("nn.Linear", "torch.sparse", FLOP_MATCHED, "fixed fan-in", "group-shared")
    rows = run_heads_bench(batch=16, in_features=24, n_labels=90, fanin=4, group_size=4, repeats=1,
                           progress=False, providers=providers, step=True, device="cpu")
    assert [r["kind"] for r in rows] == list(providers) and all(r["step_s"] for r in rows)
    assert rows[2]["nnz"] == 90 * 4 and rows[2]["max_rel_err"] is None and rows[1]["max_rel_err"] < 1e-4
    assert "| 90 | nn.Linear(k, L) |" in G.heads_markdown(rows)


def test_the_train_part_trains_the_sample():
    (ok, text), = list(G.train_part(time.monotonic() + 120, devices=("cpu",), epochs=1))
    assert ok and text.startswith("| device |") and "\n| cpu | " in text and " | 12 of 12 | " in text


def test_the_section_is_replaced_and_the_resource_table_keeps_it(tmp_path, monkeypatch):
    doc = G.with_section("# CUDA kernels\n\ntable\n", "gpu-check", "first")
    assert doc == "# CUDA kernels\n\ntable\n\n<!-- gpu-check -->\nfirst\n<!-- /gpu-check -->\n"
    doc = G.with_section(doc + "\nafter\n", "gpu-check", "second\n")
    assert doc == "# CUDA kernels\n\ntable\n\n<!-- gpu-check -->\nsecond\n<!-- /gpu-check -->\n\nafter\n"
    out = tmp_path / "REPORT.md"
    out.write_text(doc)
    monkeypatch.setattr(report, "collect", lambda: [])
    monkeypatch.setattr(report, "render", lambda rows: ("# CUDA kernels\n\nnew table\n", []))
    assert report.main(["--out", str(out)]) == 0
    assert out.read_text() == "# CUDA kernels\n\nnew table\n\n<!-- gpu-check -->\nsecond\n<!-- /gpu-check -->\n"


def test_the_report_has_the_sections_placeholder():
    assert "gpu-check" in report.sections(report.OUT.read_text())


def _gone(pid, timeout=5.0):
    """Whether process `pid` ends (or is a zombie) within `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def _child(tmp_path, code):
    script = tmp_path / "part.py"
    script.write_text(code)
    return [sys.executable, str(script)]


def test_a_part_over_its_time_is_stopped_with_its_children_and_keeps_what_it_wrote(tmp_path):
    result, pid_file = tmp_path / "r.json", tmp_path / "pid"
    cmd = _child(tmp_path, f"""
import subprocess, sys, time
sys.path.insert(0, {str(G.REPO)!r})
from engine.bench.gpu_check import write_result
write_result({str(result)!r}, True, "half of it")
p = subprocess.Popen(["sleep", "60"])
open({str(pid_file)!r}, "w").write(str(p.pid))
time.sleep(60)
""")
    t0 = time.monotonic()
    ok, text = G.run_part(cmd, 3, result)
    assert time.monotonic() - t0 < 10
    assert not ok and text == "half of it\n\n**Stopped at its time limit (3 s).**"
    pid = int(pid_file.read_text())
    assert _gone(pid), "the part's child outlived it"


def test_a_part_runs_in_its_own_process_by_the_modules_command(tmp_path):
    # the tests part, as check() starts it: here every gpu test skips (or, on a GPU, runs)
    result = tmp_path / "tests.json"
    cmd = [sys.executable, "-m", G.MODULE, "--part", "tests", "--seconds", "200", "--result", str(result)]
    ok, text = G.run_part(cmd, 200, result)
    assert text.startswith("`pytest -m gpu tests`: ") and "deselected" in text
    assert ok == (" failed" not in text and " error" not in text), text


def test_a_part_that_dies_without_a_result_says_so(tmp_path):
    ok, text = G.run_part(_child(tmp_path, "raise SystemExit(3)"), 30, tmp_path / "none.json")
    assert not ok and text.startswith("**Exited with code 3 before a result")


def test_a_part_that_raises_reports_its_traceback(tmp_path, monkeypatch):
    def part(deadline):
        yield True, "measured so far"
        raise RuntimeError("CUDA error: an illegal memory access")
    monkeypatch.setitem(G.PARTS, "kernels", part)
    result = tmp_path / "r.json"
    assert G.run_here("kernels", 10, result) == 1
    got = json.loads(result.read_text())
    assert not got["ok"] and got["markdown"].startswith("measured so far\n\nFailed:")
    assert "RuntimeError: CUDA error: an illegal memory access" in got["markdown"]


def test_the_check_writes_every_part_into_its_section(tmp_path, monkeypatch):
    ran = []

    def run_part(cmd, seconds, result):
        assert cmd[:3] == [sys.executable, "-m", "engine.bench.gpu_check"]
        name = cmd[cmd.index("--part") + 1]
        ran.append((name, seconds))
        return name != "memory", f"{name} result"
    monkeypatch.setattr(G, "run_part", run_part)
    out = tmp_path / "REPORT.md"
    out.write_text("# CUDA kernels\n")
    assert G.check(5.0, out) == 1                                      # the memory part failed
    assert [n for n, _ in ran] == list(G.PARTS) and ran[0][1] == pytest.approx(300 * 3 / 10, abs=0.5)
    body = report.sections(out.read_text())["gpu-check"]
    assert body.startswith("## GPU check\n\n`make gpu-check`")
    assert "### Kernels (engine.bench.gpu)\n\nkernels result" in body
    assert out.read_text().startswith("# CUDA kernels\n\n<!-- gpu-check -->")
    ran.clear()
    assert G.check(1.0, out) == 1                                      # 60 s: the kernels' share is under 10 s
    assert "kernels" not in [n for n, _ in ran] and "**Not run: 9 s were left.**" in out.read_text()


@pytest.mark.skipif(gpu_status()[0], reason="this machine has a GPU")
def test_without_a_gpu_the_check_is_one_line_and_exit_2():
    p = subprocess.run([sys.executable, "-m", "engine.bench.gpu_check"], cwd=G.REPO, capture_output=True, text=True)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("gpu-check needs an NVIDIA GPU that torch and CuPy see: ") and p.stderr.count("\n") == 1
