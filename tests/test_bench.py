"""Tests of engine/bench/ and `python -m engine bench`: a tiny run end to end (JSON, HTML, table),
the floors' formulas, the memory probe, the memory limit, the validation step that stands
between a wrong kernel and a timing, and the memory model against the probe's measured peak."""

import json

import numpy as np
import pytest
import torch

from engine import TrainConfig, head_memory, load_dataset
from engine.__main__ import main
from engine.bench import heads, probe, providers, report, roofline, validation
from engine.bench.timing import make_step
from engine.heads import cpu
from engine.memory import step_memory

TINY = dict(batch=16, in_features=24, fanin=4, group_size=4, repeats=1, progress=False)


def test_bench_command_writes_json_html_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "r" / "report.json"
    # two sizes, two providers with memory probes (a fresh process each: the slow part), two without
    rc = main(["bench", "--labels", "40", "90", "--batch", "16", "--in-features", "24", "--fanin", "4",
               "--group-size", "4", "--repeats", "1", "--out", str(out), "--no-memory"])
    assert rc == 0
    assert "-" in capsys.readouterr().out
    rc = main(["bench", "--labels", "40", "90", "--batch", "16", "--in-features", "24", "--fanin", "4",
               "--group-size", "4", "--repeats", "1", "--out", str(out), "--labels-per-row", "2",
               "--providers", "nn.Linear", "group-shared"])
    assert rc == 0
    printed = capsys.readouterr().out
    for name in ("nn.Linear", "group-shared (k=4, m=4)", "targets:",
                 "GFLOP/s", "peak RSS"):
        assert name in printed
    report = json.loads(out.read_text())
    assert report["config"]["label_counts"] == [40, 90]
    assert report["machine"]["peak_flops"] > 0 and report["machine"]["copy_bytes_per_s"] > 0
    rows = report["results"]
    assert [(r["n_labels"], r["kind"]) for r in rows] == [(L, p) for L in (40, 90) for p in ("nn.Linear", "group-shared")]
    for r in rows:
        for key in ("forward_s", "fwd_bwd_s", "step_s", "fwd_floor_s", "fwd_bwd_floor_s", "step_floor_s",
                    "fwd_bwd_x_floor", "fwd_bwd_vs_dense", "step_vs_dense"):
            assert r[key] > 0, (r["provider"], key)
        assert r["peak_rss_mb"] >= r["warm_rss_mb"] >= r["base_rss_mb"] > 0 and r["hwm_reset"] is True
        assert 0 < r["step_mb"] <= r["peak_rss_mb"] - r["base_rss_mb"]
        assert r["fused_loss"] == (r["kind"] == "group-shared")
    assert {t["name"].split(":")[0] for t in report["targets"]} == {"L=100,000", "L=670,091"}
    assert all(t["value"] is None and t["met"] is None for t in report["targets"])   # not at these sizes
    html = out.with_suffix(".html").read_text()
    assert "plotly" in html.lower() and "group-shared (k=4, m=4)" in html


def test_validation_catches_a_wrong_kernel(monkeypatch):
    # a forward that is off in one logit must stop the benchmark before any timing
    good = cpu.forward

    def wrong(X, idx, W, bias=None, n_labels=None):
        Z = good(X, idx, W, bias, n_labels)
        Z[0, 1] += 1.0
        return Z
    monkeypatch.setattr(cpu, "forward", wrong)
    with pytest.raises(AssertionError, match=r"fixed fan-in \(k=4\): Z\[0, 1\]"):
        heads.run_heads_bench(n_labels=30, providers=("fixed fan-in",), **TINY)


def test_validation_catches_a_wrong_fused_loss(monkeypatch):
    good = cpu.group_shared_bce

    def wrong(*a, **kw):
        loss, dX, dW, db = good(*a, **kw)
        if dW is not None:
            dW = dW.copy()
            dW[0, 0, 0] *= 1.5
        return loss, dX, dW, db
    monkeypatch.setattr(cpu, "group_shared_bce", wrong)
    with pytest.raises(AssertionError, match=r"group-shared .*\(fused loss\): dW"):
        heads.run_heads_bench(n_labels=30, providers=("group-shared",), step=True, **TINY)


def test_skipped_providers_keep_their_analytic_figures():
    need = step_memory(providers.provider_shape("group-shared", 24, 30, 4, 4), 16)["total"]
    rep = heads.run_bench(label_counts=(30,), providers=("nn.Linear", "group-shared"), memory=False,
                          mem_limit=need + 1, **TINY)
    dense, gs = rep["results"]
    assert dense["skipped"] and "limit" in dense["skipped"] and dense["fwd_bwd_s"] is None
    assert dense["analytic_step_mb"] > gs["analytic_step_mb"] > 0
    assert gs["skipped"] is None and gs["step_s"] > 0 and gs["fwd_bwd_vs_dense"] is None
    assert "not run (memory)" in report.format_report(rep)


def test_floor_formulas():
    # sparse forward: 2·B·L·k FLOPs; bytes W + idx + X + Z + b; dense: 2·B·d·L
    B, d, L, k, m = 8, 16, 64, 4, 8
    costs, P = roofline.op_costs("group-shared", B, d, L, k, m)
    assert costs["fwd"] == (2 * B * L * k, 4 * (L * k + (L // m) * k + B * d + B * L + L))
    assert costs["bwd"][0] == 4 * B * L * k and costs["fused"][0] == 6 * B * L * k
    assert P == L * k + L and costs["adam"] == (0, 7 * P * 4)
    dcosts, dP = roofline.op_costs("nn.Linear", B, d, L, k, m)
    assert dcosts["fwd"][0] == 2 * B * d * L and dP == L * d + L
    f = roofline.floors("nn.Linear", B, d, L, k, m, {"peak_flops": 1e9, "copy_bytes_per_s": 1e12})
    assert f["fwd_floor_s"] == pytest.approx(2 * B * d * L / 1e9)          # compute-bound here
    # the memory model of a step: params, grads, Adam; unfused: 5 (B, L) buffers; fused: its held
    # gradients, the (T + 3) (B, d) buffers and 17 bytes per slot
    step = lambda kind, T=2: step_memory(providers.provider_shape(kind, d, L, k, m), B, threads=T)["total"]  # noqa: E731
    assert step("nn.Linear") == 4 * dP * 4 + 5 * B * L * 4
    assert step("group-shared") == 5 * P * 4 + 4 * (L // m) * k + (2 + 3) * B * d * 4 + 17 * L
    assert step("group-shared", T=64) == step("group-shared", T=L // m)         # one buffer per group at most
    assert step("torch.sparse") == 4 * P * 4 + 8 * L * k + 8 * (L + 1) + 5 * B * L * 4


def test_step_trains_and_fused_equals_unfused_loss():
    x = torch.randn(16, 24)
    indptr, labels = providers.random_labels(16, 40, 3)
    head = providers.make_provider("group-shared", 24, 40, 4, 4)
    ref = providers.make_provider("nn.Linear", 24, 40, 4, 4)
    assert validation.validate_loss("gs", head, x, indptr, labels) < 1e-5
    step = make_step(head, x.clone().requires_grad_(), indptr, labels, lr=1e-2)
    losses = [step() for _ in range(5)]
    assert losses[-1] < losses[0]
    assert np.diff(indptr).min() >= 1 and isinstance(ref, torch.nn.Module)


@pytest.mark.slow
@pytest.mark.parametrize("n_labels", [None, 100_000], ids=["sample", "L=100,000"])
def test_the_train_page_memory_of_a_sparse_head_matches_the_measured_peak(n_labels):
    # a memory measurement, not a timing: the Train page's figure (head_memory of the default
    # recipe's group-shared head, without its dense part: the probe builds the sparse layer) against the benchmark's probe of the same head at the same
    # shape: what its training steps add to a warm process at their peak (engine/bench/probe.py).
    # The probe's RSS also holds what the allocator keeps of freed buffers: within 25 %.
    ds = load_dataset("sample")
    config = TrainConfig.of(dense_share=0)
    mc = config.model_config(ds.n_features, n_labels or ds.n_labels)
    assert mc.head.name == "group_shared"
    shown = head_memory(mc, config.batch_size)["total"] / 2 ** 20
    spec = probe.probe_spec("group-shared", config.batch_size, mc.head_in, mc.n_labels, mc.head.fanin, mc.head.group_size)
    measured = probe.measure_memory(spec)
    assert measured["hwm_reset"], "the probe could not reset VmHWM: no step peak to compare"
    assert measured["step_mb"] == pytest.approx(shown, rel=0.25), (measured, shown)
