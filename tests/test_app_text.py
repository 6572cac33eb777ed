"""User text shown as text (issue 17, class 7), and the server's safe options wherever it starts
(class 8), below the browser: app/text.py's two escapes; every figure's hovers, ticks and legends;
every page through AppTest with a dataset, a dataset folder and a run whose names are Markdown and
HTML; the error boxes that quote such text (a dataset token, an upload's file name, an imported
config value); the rule of app/server.py, the launcher's command line, and Home.py's refusal of an
unsafe server. In a real browser (no request made, no link drawn; real servers started from another
folder): tests/test_app_browser.py."""

import dataclasses
import html
import json
import re
import string
import sys

import numpy as np
import pytest
from streamlit import config as st_config

from engine import TrainConfig, generate, save_dataset

import app.__main__ as launcher
from app import figures, server
from app.jobs import JobRegistry, read_status
from app.text import WORD_JOINER, md, plotly
from apptest import (app, app_env, assert_clean, import_config, own_runs_dir, page, runs_dir,  # noqa: F401
                     shown, upload_dataset)

# the names of issue 17: a tracking pixel, a live link, an HTML event handler, emphasis, math
HOSTILE = ["![x](http://127.0.0.1:9/x.png)", '<a href="http://127.0.0.1:9/">x</a>', "<img src=x onerror=alert(1)>",
           "**bold**", "$x$"]
# and what else Markdown or Plotly would read: bare addresses, directives, entities, blocks, code
MORE = HOSTILE + ["http://127.0.0.1:9/", "WWW.example.com", "mailto:a@b.co", ":red[x] :smile:", "&lt;b&gt; &amp;",
                  "# h\n- item\n> quote", "| a | b |", "`code` \\*", "[x]: http://127.0.0.1:9/", "%{x} <extra>"]
PAGES = ["home", "data", "train", "label_map", "connectivity", "compare", "inference", "tail"]
MARKDOWN = ("markdown", "caption", "error", "warning", "info", "success", "title", "header", "subheader")


# ---------------------------------------------------------------------------------------------
# the escapes

@pytest.mark.parametrize("s", MORE)
def test_md_escapes_every_markdown_character_and_breaks_bare_addresses(s):
    out = md(s)
    assert shown(out) == s                                            # a reader sees the text as written
    unescaped = re.sub(r"\\(.)", "", out, flags=re.S)
    assert not set(unescaped) & set(string.punctuation), out          # every punctuation character escaped
    literal = re.sub(r"\\(.)", r"\1", out, flags=re.S)                # what GFM's autolink literals look at
    assert not re.search(rf"[:@](?!{WORD_JOINER})|www\.", literal, re.I), out


@pytest.mark.parametrize("s", MORE)
def test_plotly_escapes_tags_and_entities(s):
    out = plotly(s)
    assert "<" not in out and ">" not in out and html.unescape(out) == s


# ---------------------------------------------------------------------------------------------
# the figures: every name in a hover, a tick or a legend is escaped

def _strings(node):
    """Every string in a figure's JSON (data and layout)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _strings(v)


def assert_names_as_text(strings, names):
    """Each name is there in Plotly's escaped form, and no raw tag of one is."""
    strings = list(strings)
    for name in names:
        assert any(plotly(name) in s for s in strings), name
        if plotly(name) != name:
            assert not any(name in s for s in strings), name


def _figures(names):
    rng = np.random.default_rng(0)
    n = len(names)
    evals = [{"step": i, "P@1": 0.1 * i} for i in range(3)]
    return {
        "label_map": figures.label_map(rng.random((n, 2)), names, np.arange(1, n + 1), np.arange(n) % 2),
        "label_map highlighted": figures.label_map(rng.random((n, 2)), names, np.arange(1, n + 1), np.arange(n) % 2,
                                                   highlight=1),
        "connectivity_heatmap": figures.connectivity_heatmap(np.arange(2), np.eye(2, n, dtype=np.uint8), inputs=names),
        "group_weights inputs": figures.group_weights(rng.standard_normal((2, n)), names, ["a", "b"]),
        "group_weights labels": figures.group_weights(rng.standard_normal((n, 2)), ["a", "b"], names),
        "overlay": figures.overlay({name: evals for name in names}),
        "pareto": figures.pareto([{"run": name, "head": name, "memory": 2**20, "p1": 0.5} for name in names]),
        "memory_bars": figures.memory_bars({name: {"params": 1, "total": 1} for name in names},
                                           {name: {"total": 1} for name in names}),
        "bench_lines": figures.bench_lines([{"provider": name, "n_labels": 10, "fwd_bwd_s": 0.1} for name in names]),
        "lss_bars": figures.lss_bars([{"index": name, "cand_pct": 1.0, "recall": 0.5, "P@1_ratio": 0.5}
                                      for name in names]),
    }


@pytest.mark.parametrize("which", list(_figures(MORE)))
def test_every_figure_shows_names_as_text(which):
    fig = _figures(MORE)[which]
    assert_names_as_text(_strings(json.loads(fig.to_json())), MORE)


def test_the_label_map_hover_shows_the_escaped_name():
    fig = figures.label_map(np.zeros((len(HOSTILE), 2)), HOSTILE, np.ones(len(HOSTILE)), np.zeros(len(HOSTILE), int))
    assert list(fig.data[0].customdata[:, 0]) == [plotly(n) for n in HOSTILE]
    assert fig.data[0].hovertemplate.startswith("%{customdata[0]}<br>")


# ---------------------------------------------------------------------------------------------
# every page, with hostile names everywhere

def _page_texts(at):
    """The Markdown bodies a page sends (the browser renders them), and the strings of its figures."""
    texts = [e.value for kind in MARKDOWN for e in getattr(at, kind)]
    specs = [s for el in at.get("plotly_chart") for s in _strings(json.loads(el.proto.spec))]
    return texts, specs


def make_hostile(tmp_path, runs):
    """A dataset whose label and feature names are the hostile ones (numbered), in a folder with a
    hostile name, and a finished run on it in the run store `runs` under a hostile run id:
    (the folder, the run id)."""
    ds = generate(n_points=300, n_features=60, n_labels=60, n_clusters=4, seed=3, name="hostile")
    ds = dataclasses.replace(ds, label_names=[f"{HOSTILE[i % 5]} {i}" for i in range(ds.n_labels)],
                             feature_names=[f"{HOSTILE[(i + 2) % 5]} f{i}" for i in range(ds.n_features)])
    path = tmp_path / "**bold** $x$ <img src=x onerror=alert(1)>"
    save_dataset(ds, path)
    reg = JobRegistry(runs)
    config = TrainConfig.from_dict({"data": str(path), "head": "group_shared", "hidden": 0, "fanin": 8,
                                    "group_size": 8, "epochs": 1, "eval_every": 0})
    job = reg.start(config, ds)
    job.thread.join(120)
    assert reg.state(job.run) == "done", read_status(job.run.path)
    run_id = "<img src=x onerror=alert(1)> **bold**"
    job.run.path.rename(runs / run_id)
    return path, run_id


@pytest.fixture
def hostile_run(tmp_path, own_runs_dir):
    return make_hostile(tmp_path, own_runs_dir)


def test_every_page_shows_hostile_names_as_text(hostile_run):
    path, run_id = hostile_run
    at = app(data="folder", path=str(path), head="group_shared", hidden="none", fanin=8, group_size=8, method="pca",
             run=run_id, map_model=run_id, highlight=0, conn_model=run_id, inf_model=run_id)
    texts, specs = [], []
    for name in PAGES:
        page(at, name)
        assert_clean(at)
        assert not at.error, (name, [e.value for e in at.error])
        t, s = _page_texts(at)
        texts += t
        specs += s
    for name in HOSTILE + [path.name, run_id]:
        assert any(md(name) in t for t in texts), name                  # shown, escaped ...
        assert not any(name in t for t in texts), name                  # ... and never raw
    assert_names_as_text(specs, HOSTILE + [run_id])                     # hovers, ticks, legends


def test_error_boxes_show_quoted_text_as_text(tmp_path, own_runs_dir):
    token = HOSTILE[0]
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "train.txt").write_text(f"2 5 3\n0 1:1\n{token} 1:1\n")    # a bad label id, quoted in the message
    (folder / "test.txt").write_text("1 5 3\n0 1:1\n")
    at = page(app(data="folder", path=str(folder)), "data")
    _assert_error_quotes(at, token)
    at = upload_dataset(at, {"train.txt": b"1 5 3\n0 1:1\n", "test.txt": b"1 5 3\n0 1:1\n",
                             f"{HOSTILE[2]}.txt": b""})                 # an upload's file name
    _assert_error_quotes(at, f"{HOSTILE[2]}.txt")
    at = import_config(page(app(), "train"), json.dumps({"head": HOSTILE[1]}).encode())    # an imported value
    _assert_error_quotes(at, HOSTILE[1])
    at = import_config(page(app(), "train"), json.dumps({"data": str(tmp_path / HOSTILE[4])}).encode())
    _assert_error_quotes(at, HOSTILE[4])                                # a folder named by an imported config


def _assert_error_quotes(at, s):
    assert_clean(at)
    boxes = [e.value for e in at.error]
    assert any(md(s) in b for b in boxes) and not any(s in b for b in boxes), boxes


# ---------------------------------------------------------------------------------------------
# the server's options: the rule, the launcher, Home.py's refusal

SAFE = {"server.address": "127.0.0.1", "server.maxUploadSize": 200, "server.enableXsrfProtection": True,
        "server.enableCORS": True, "browser.gatherUsageStats": False}
UNSAFE = [  # (options that differ from SAFE, environment, words of the problem)
    ({"server.address": None}, {}, "every interface"),
    ({"server.address": ""}, {}, "every interface"),
    ({"server.address": "0.0.0.0"}, {}, "'0.0.0.0'"),
    ({"server.address": "::"}, {}, "'::'"),
    ({"server.address": "192.0.2.7"}, {"XMC_ALLOW_REMOTE": "yes"}, "XMC_ALLOW_REMOTE=1"),
    ({"server.address": "example.com"}, {}, "'example.com'"),
    ({"server.enableXsrfProtection": False}, {"XMC_ALLOW_REMOTE": "1"}, "server.enableXsrfProtection is False"),
    ({"server.enableCORS": False}, {}, "server.enableCORS is False"),
    ({"browser.gatherUsageStats": True}, {}, "browser.gatherUsageStats is True"),
    ({"server.maxUploadSize": 201}, {}, "201 MB, above 200 MB"),
]
SAFE_TOO = [  # (options that differ from SAFE, environment)
    ({}, {}), ({"server.address": "localhost"}, {}), ({"server.address": "127.0.0.2"}, {}),
    ({"server.address": "::1"}, {}), ({"server.address": "[::1]"}, {}),
    ({"server.address": "unix:///tmp/xmc.sock"}, {}),
    ({"server.address": "0.0.0.0"}, {"XMC_ALLOW_REMOTE": "1"}), ({"server.maxUploadSize": 10}, {}),
]


def test_the_declared_options_are_the_safe_ones():
    declared = server.declared()
    assert {k: declared[k] for k in SAFE} == SAFE


@pytest.mark.parametrize("options, env, words", UNSAFE, ids=[str(c[0]) for c in UNSAFE])
def test_the_rule_names_each_unsafe_option(options, env, words):
    found = server.problems({**SAFE, **options}.get, env)
    assert len(found) == 1 and words in found[0], found


@pytest.mark.parametrize("options, env", SAFE_TOO, ids=[str(c) for c in SAFE_TOO])
def test_the_rule_passes_safe_options(options, env):
    assert server.problems({**SAFE, **options}.get, env) == []


@pytest.mark.parametrize("content, words", [
    (None, "cannot be read"), (b"[server\n", "cannot be read"), (b"\xff\xfe", "cannot be read"),
    (b'[server]\naddress = "127.0.0.1"\n', "lack server.maxUploadSize"),
])
def test_a_broken_options_file_is_a_problem_that_names_it(tmp_path, content, words):
    path = tmp_path / "config.toml"
    if content is not None:
        path.write_bytes(content)
    found = server.problems(SAFE.get, {}, path)
    assert len(found) == 1 and words in found[0] and str(path) in found[0], found
    with pytest.raises(server.ServerConfigError, match=words):
        server.flags(path)


def test_the_launcher_passes_every_declared_option_first():
    cmd = launcher.command(["--server.port", "8765"])
    assert cmd[:5] == [sys.executable, "-m", "streamlit", "run", str(launcher.HOME)] and launcher.HOME.is_file()
    assert cmd[-2:] == ["--server.port", "8765"]                        # the caller's flags come last, and win
    passed = dict(flag[2:].split("=", 1) for flag in cmd[5:-2])
    assert passed == {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in server.declared().items()}


def test_the_launcher_refuses_an_unreadable_options_file_in_one_line(monkeypatch, capsys):
    def broken():
        raise server.ServerConfigError("the app's server options cannot be read: config.toml: gone")
    monkeypatch.setattr(launcher.server, "flags", broken)
    assert launcher.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the app's server options cannot be read") and err.count("\n") == 1


@pytest.fixture
def live_options():
    """Set options of the (in-process) server AppTest runs under; the former values come back after."""
    before = {key: st_config.get_option(key) for key in SAFE}
    yield lambda options: [st_config.set_option(k, v) for k, v in options.items()]
    for key, value in before.items():
        st_config.set_option(key, value)


@pytest.mark.parametrize("options, env, words", UNSAFE[::2], ids=[str(c[0]) for c in UNSAFE[::2]])
def test_home_refuses_an_unsafe_server(live_options, monkeypatch, options, env, words):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    live_options({**SAFE, **options})
    at = app()
    assert_clean(at)
    assert [shown(e.value) for e in at.error if words in shown(e.value) and "python -m app" in e.value]
    assert not at.title and not at.selectbox                            # no page, no sidebar


def test_home_shows_the_app_when_sharing_is_explicit(live_options, monkeypatch):
    monkeypatch.setenv("XMC_ALLOW_REMOTE", "1")
    live_options({**SAFE, "server.address": "0.0.0.0"})
    at = app()
    assert_clean(at)
    assert not at.error and at.title[0].value.startswith("XMC lab")
