"""The Tail page through AppTest: the decile figure of stored runs side by side, PSP@k recomputed
with the chosen propensity constants (the engine's numbers), and what it does with runs it cannot
show (none yet, another dataset, a broken checkpoint, a run id in the URL that is not there)."""

import numpy as np
import pytest
import scipy.sparse as sp

from engine import (PROPENSITY_CONSTANTS, TrainConfig, evaluate, generate, inv_propensity, predict_run,
                    save_dataset, tail_by_frequency)

from app import figures
from app.jobs import JobRegistry, read_status
from apptest import app, app_env, assert_clean, own_runs_dir, page, runs_dir, tiny  # noqa: F401


def train(reg, ds, path, **kw):
    job = reg.start(TrainConfig.of(data=str(path), hidden=32, epochs=1, eval_every=0, **kw), ds)
    job.thread.join(60)
    assert reg.state(job.run) == "done", read_status(job.run.path)
    return job


@pytest.fixture
def two_runs(tiny, own_runs_dir):
    """A group-shared and a dense run on the tiny set: the page's default choice."""
    ds, path = tiny
    reg = JobRegistry(own_runs_dir)
    return ds, [train(reg, ds, path, head="group_shared", fanin=8, group_size=8).run,
                train(reg, ds, path, head="dense").run]


def test_without_runs_the_page_says_what_to_do(own_runs_dir):
    at = page(app(), "tail")
    assert_clean(at)
    assert at.title[0].value == "Tail" and "train two heads" in at.info[0].value


def test_the_deciles_and_psp_of_two_runs(two_runs):
    ds, runs = two_runs
    at = page(app(tail_k=3), "tail")
    assert_clean(at)
    assert not at.error and not at.warning, [e.value for e in at.error] + [w.value for w in at.warning]
    shown = at.multiselect(key="tail_runs").value                              # both, by default
    assert sorted(shown) == sorted(r.id for r in runs)
    runs = sorted(runs, key=lambda r: shown.index(r.id))                       # the tables' order
    assert len(at.get("plotly_chart")) == 2                                    # the deciles, the PSP weights
    tops = [predict_run(r, 5) for r in runs]
    table = at.dataframe[0].value                                # the numbers, then PSP@k
    expected = tail_by_frequency(ds.Y_train, ds.Y_test, tops[0], k=3)
    column = next(c for c in table.columns if c.startswith(runs[0].id) and c.endswith("recall %"))
    assert table[column].tolist() == pytest.approx([round(100 * r["recall"], 1) for r in expected], nan_ok=True)
    for name, (A, B) in PROPENSITY_CONSTANTS.items():
        at.selectbox(key="psp_set").set_value(name).run()
        assert_clean(at)
        psp = at.dataframe[1].value
        for row, top in zip(psp.to_dict("records"), tops):
            want = evaluate(ds.Y_test, top, ks=(1, 3, 5), inv_propensity=inv_propensity(ds.Y_train, A, B))
            assert row["PSP@5"] == round(want["PSP@5"], 4) and row["P@1"] == round(want["P@1"], 4), name


def test_runs_it_cannot_show_are_named_and_left_out(two_runs, tmp_path):
    ds, runs = two_runs
    other = tmp_path / "other"
    save_dataset(generate(n_points=120, n_features=40, n_labels=30, n_clusters=3, seed=2, name="other"), other)
    reg = JobRegistry(runs[0].path.parent)
    elsewhere = train(reg, None, other, head="dense").run
    runs[0].checkpoint_path.write_bytes(b"not a checkpoint")                  # the group-shared run's
    at = page(app(), "tail")
    at.multiselect(key="tail_runs").set_value([runs[1].id, runs[0].id, elsewhere.id]).run()
    assert_clean(at)
    assert any(runs[0].id in e.value.replace("\\", "") for e in at.error)
    assert any("left out" in w.value and "trained on" in w.value for w in at.warning)
    assert len(at.get("plotly_chart")) == 2                                    # the one good run still drawn
    at.multiselect(key="tail_runs").set_value([runs[0].id]).run()             # nothing left to draw
    assert_clean(at)
    assert not at.get("plotly_chart")


@pytest.mark.parametrize("params", [{"tail_runs": "no-such-run"}, {"tail_k": "7"}, {"psp_set": "Bogus"}])
def test_a_url_that_names_nothing_here_shows_the_page(two_runs, params):
    at = page(app(**params), "tail")
    assert_clean(at)
    assert at.title[0].value == "Tail"



def test_the_figures_name_runs_as_text():
    Y = sp.csr_matrix(np.eye(4))                                             # 4 points, one label each
    rows = tail_by_frequency(Y, Y, np.arange(4)[:, None], k=1, n_bins=2)
    fig = figures.tail_bins({"<b>run</b>": rows, "dense": rows}, 1)
    bars = [t for t in fig.data if t.type == "bar"]
    assert [t.name for t in bars] == ["&lt;b&gt;run&lt;/b&gt;", "dense"] and len(fig.data) == 5
    fig = figures.propensity_weights([0, 3, 1], {"<i>x</i>": [3.0, 1.5, 2.0]}, "<i>x</i>")
    assert fig.data[0].name == "&lt;i&gt;x&lt;/i&gt;" and list(fig.data[0].y) == [3.0, 2.0, 1.5]
