"""The layer drawn, one label inspected and the label map's colours, through AppTest: each renders,
its widgets drive the engine, a DST run replays, a click on the map leads to the label; their
figures as pure functions. In a real browser: tests/test_app_browser.py."""

import numpy as np
import pytest

from engine import small_layer

from app import figures, layer_figures
from apptest import app, app_env, assert_clean, assert_error_box, finished_dst_run, page, runs_dir  # noqa: F401

SMALL = dict(head="group_shared", hidden=64, fanin=16, group_size=16)


@pytest.fixture(scope="module")
def dst_run(runs_dir):
    """A finished group-shared run with dynamic sparse training (an update every 2 steps)."""
    return finished_dst_run(runs_dir)


def test_layer_diagram_draws_every_connection():
    layers = [small_layer(h) for h in ("dense", "fixed_fanin", "group_shared")]
    fig = layer_figures.layer_diagram(layers)
    segments = [np.isfinite(t.x).sum() // 2 for t in fig.data if t.mode == "lines"]
    assert sum(segments) == 12 * 16 + 16 * 3 + (4 * 3 + 16)        # dense, fixed fan-in, group-shared
    assert sum("reads" in a.text for a in fig.layout.annotations) == 3


def test_replay_diagram_colours_the_moved_connections():
    before, after = np.array([[1, 2, 3]]), np.array([[1, 7, 3]])
    fig = layer_figures.replay_diagram(before, after, 2, [1, 2, 3, 7], ["a", "b", "c", "d"], ["x", "y"])
    colours = {t.line.color: np.isfinite(t.x).sum() // 2 for t in fig.data if t.mode == "lines" and t.x[0] is not None}
    assert [colours[layer_figures.CHANGE[kind]] for kind in ("kept", "added", "dropped")] == [2, 1, 1]


def test_label_map_colours_by_values_with_the_unknown_in_grey():
    fig = figures.label_map(np.zeros((4, 2)), list("abcd"), [1, 2, 3, 4], values=[0.5, np.nan, 1, 0],
                            value_name="recall@5")
    assert [len(t.x) for t in fig.data] == [1, 3] and fig.data[0].marker.color == "#C8C8C8"
    assert fig.data[1].customdata[:, 3].tolist() == [0, 2, 3]      # rows of xy, for clicks


@pytest.mark.parametrize("head", ["dense", "fixed_fanin", "mach"])
def test_the_views_render_for_every_head(head):
    at = app(head=head, hidden=64, fanin=16, label=3, method="pca", map_color="cluster")
    for name, title in [("layer", "The layer drawn"), ("label", "One label"), ("label_map", "Label map")]:
        page(at, name)
        assert_clean(at)
        assert at.title[0].value == title and not at.error, [e.value for e in at.error]


def test_the_layer_page_draws_and_refuses_a_bad_shape():
    at = page(app(**SMALL), "layer")
    assert_clean(at)
    assert at.title[0].value == "The layer drawn" and len(at.dataframe) == 1
    assert_error_box(page(app(**SMALL, layer_k=20), "layer"), "cannot be drawn", "fanin")


def test_the_layer_page_replays_a_dst_run(dst_run):
    at = page(app(**SMALL, layer_run=dst_run), "layer")
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    assert any(s.value.startswith("Update 1 of") for s in at.caption)
    at.slider(key="layer_update").set_value(3).run()
    assert_clean(at)
    assert any(s.value.startswith("Update 3 of") for s in at.caption)


def test_one_label_of_a_run(dst_run):
    at = page(app(**SMALL), "label")
    assert_clean(at)
    assert "Choose a label" in at.info[0].value
    at = page(app(**SMALL, label_model=dst_run, label=5, label_k=3), "label")
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert set(metrics) == {"training points", "test points", "group", "precision@3", "recall@3"}
    assert len(at.dataframe) == 2                                   # neighbours, missed points
    at.selectbox(key="label").set_value(7).run()
    assert_clean(at)
    assert at.query_params["label"] == "7"                           # a link to this label


@pytest.mark.parametrize("colour", ["group", "cluster", "frequency", "recall"])
def test_the_label_map_colours(dst_run, colour):
    at = page(app(method="pca", map_color=colour, map_model=dst_run), "label_map")
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    assert "all 2,000 labels" in at.caption[0].value and "Colour:" in at.caption[0].value


@pytest.mark.parametrize("value", ["abc", "99999", "-3", "1e3", "<b>7</b>"])
def test_a_label_link_that_names_no_label_asks_for_one(value):
    at = page(app(**SMALL, label=value), "label")
    assert_clean(at)
    assert "Choose a label" in at.info[0].value and "label" not in at.query_params
