"""app/figures.py: pure functions, data in, a Plotly figure out (serialisable, as st.plotly_chart
needs), tested without a browser."""

import pytest
import numpy as np
import plotly.graph_objects as go

from app import figures


def test_figures_return_plotly_figures():
    rng = np.random.default_rng(0)
    steps = [{"step": i, "loss": 10.0 / i, "step_time": 0.01} for i in range(1, 6)]
    evals = [{"step": i, "P@1": 0.1 * i, "P@3": 0.05 * i} for i in (0, 2, 4)]
    figs = [
        figures.label_frequency(rng.integers(0, 50, 100)),
        figures.histogram(rng.integers(0, 5, 100), "t", "x"),
        figures.training_curves(steps, evals, ["P@1", "P@3"]),
        figures.step_times(steps),
        figures.overlay({"a": evals, "b": evals[:2]}, "P@1"),
        figures.label_map(rng.random((10, 2)), [f"l{i}" for i in range(10)], np.arange(10), np.arange(10) // 3),
        figures.label_map(rng.random((10, 2)), [f"l{i}" for i in range(10)], np.arange(10), np.arange(10) // 3,
                          highlight=1),
        figures.connectivity_heatmap(np.arange(3), np.eye(3, 8, dtype=np.uint8), sampled=True),
        figures.reuse_histogram(rng.integers(0, 9, 32), expected=4.0),
        figures.group_weights(rng.standard_normal((2, 3)), ["h1", "h2", "h3"], ["a", "b"]),
        figures.dst_changes([{"step": 10, "dropped": 5}, {"step": 20, "dropped": 3}]),
        figures.memory_bars({"dense": {"params": 10, "total": 10}}, {"dense": {"total": 11}}),
        figures.bench_lines([{"provider": "p", "n_labels": 1000, "fwd_bwd_s": 0.01}]),
        figures.pareto([{"run": "r", "head": "dense", "memory": 2**20, "p1": 0.3}]),
        figures.lss_bars([{"index": "SimHash", "cand_pct": 40.0, "recall": 0.7, "P@1_ratio": 0.8},
                          {"index": "learned", "cand_pct": 10.0, "recall": 0.9, "P@1_ratio": float("nan")}]),
    ]
    assert all(isinstance(f, go.Figure) for f in figures_ok(figs))


def figures_ok(figs):
    for f in figs:
        f.to_dict()                                   # serialisable, as st.plotly_chart needs
    return figs


def test_training_curves_have_one_point_per_record():
    steps = [{"step": i, "loss": 1.0, "step_time": 0.01} for i in range(1, 8)]
    evals = [{"step": 0, "P@1": 0.1}, {"step": 4, "P@1": 0.2}]
    fig = figures.training_curves(steps, evals, ["P@1"])
    assert len(fig.data[0].x) == 7 and list(fig.data[1].x) == [0, 4]


def test_label_map_highlight_splits_the_group():
    fig = figures.label_map(np.zeros((6, 2)), list("abcdef"), np.ones(6), np.array([0, 0, 1, 1, 2, 2]), highlight=1)
    assert [len(t.x) for t in fig.data] == [4, 2]
    assert list(fig.data[1].customdata[:, 0]) == ["c", "d"]        # hover: name, frequency, group


def test_time_to_accuracy_draws_a_line_per_run_and_a_marker_per_peer():
    fig = figures.time_to_accuracy({"dense": [(1.0, 0.5), (2.5, 0.6)], "<b>gs</b>": [(0.5, 0.4)]},
                                   {"Omikuji": (10.6, 0.6162)})
    lines, (peer,) = fig.data[:2], fig.data[2:]
    assert [t.mode for t in lines] == ["lines+markers", "lines+markers"] and peer.mode == "markers"
    assert list(lines[0].y) == [50.0, 60.0] and list(peer.x) == [10.6] and peer.y[0] == pytest.approx(61.62)
    assert "<b>" not in lines[1].name and fig.layout.xaxis.type == "log"
