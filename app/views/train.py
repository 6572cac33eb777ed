"""Train: pick a head, start a run, watch loss and P@k / nDCG@k / PSP@k live; compare runs."""

import json

import pandas as pd
import streamlit as st

from engine import PRESETS, ConfigError, RunNotFoundError, TrainConfig, XMCError, head_memory, head_params

from app import analysis, datasets, figures, registry, settings, sidebar, teaching, text, warmup
from app.jobs import LIVE, read_status

REFRESH_S = 0.5
ss = st.session_state

teaching.intro(
    "Train",
    "The network encodes the sparse features into a hidden vector h (d numbers), and the **head** turns h "
    "into one score per label. Training lowers the binary cross-entropy between the scores and the labels; "
    "every few steps the model ranks the labels of the test points, and **P@k** counts how many of its top "
    "k are right.",
    r"\mathcal{L} = -\frac{1}{B}\sum_{b}\sum_{l}\big[y_{bl}\log\sigma(z_{bl}) + (1-y_{bl})\log(1-\sigma(z_{bl}))\big]"
    r"\qquad \mathrm{P@}k = \frac{1}{N}\sum_i \frac{1}{k}\,\big|\mathrm{top}_k(z_i)\cap y_i\big|",
)


def apply_preset():
    """Callback: every control of the recipe (all but the device) to the chosen preset (the defaults
    and the preset's own settings)."""
    if ss.get("preset") in PRESETS:
        ss.update({name: settings.default(name) for name in settings.RECIPE})
        ss.update(PRESETS[ss["preset"]])


def import_config():
    """Callback: settings from an uploaded config.json."""
    f = ss.get("config_file")
    if f is None:
        return
    try:
        cfg = TrainConfig.from_dict(json.loads(f.getvalue()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, XMCError) as e:
        ss.train_error = f"That is not a run configuration: {e}"
        return
    unshown = settings.outside_the_controls(cfg)
    if unshown:
        ss.train_error = f"This page cannot set that configuration: {'; '.join(unshown)}"
        return
    flat = cfg.flat()
    ss.update({name: flat[name] for name in settings.CONTROLLED if name in flat})
    if cfg.data == "sample":
        ss["data"] = "sample"
    else:
        ss.update(data="folder", path=cfg.data)


def start():
    """Callback of Start: build the config, start the job, select its run."""
    ss.train_error = None
    try:
        ds, ref = datasets.current_dataset()
        config = sidebar.train_config(ref)
        job = registry.jobs().start(config, ds)
    except XMCError as e:
        ss.train_error = str(e)
        return
    ss["run"] = job.id
    ss["started_at"] = job.started


def control(action):
    job = registry.jobs().get(ss.get("run") or "")
    if job is not None:
        getattr(job, action)()
        if action == "stop":
            job.thread.join(1.0)                        # the step in flight ends; the page then shows "stopped"


def config_box():
    """Export the shown run's config (or the current settings) as JSON; import one."""
    with st.expander("Configuration as JSON (export / import)"):
        try:
            shown = store.get(ss["run"]).config if ss.get("run") in ids else config
        except (RunNotFoundError, XMCError):
            shown = config
        cfg_json = json.dumps(shown.to_dict(), indent=2)
        st.code(cfg_json, language="json")
        st.download_button("Download config.json", cfg_json, file_name="config.json", mime="application/json")
        st.file_uploader("Import a config.json (sets the sidebar and the settings above)", type=["json"],
                         key="config_file", on_change=import_config)


# --- settings -------------------------------------------------------------------------------
ds, ref = datasets.dataset_or_stop()
with st.container(border=True):
    c = st.columns([2, 1, 1, 1, 1])
    c[0].selectbox("Preset", ["(custom)"] + list(PRESETS), key="preset", on_change=apply_preset,
                   help="sets the head and its settings in the sidebar, and the epochs")
    shown = [n for n in settings.PAGE if not (teaching.classroom() and n in settings.ADVANCED)]
    more_rows = -(-max(len(shown) - 4, 0) // 5)                         # the first row holds 4
    for col, name in zip(c[1:] + [col for _ in range(more_rows) for col in st.columns(5)], shown):
        settings.control(col, name, persist_state="session")

try:
    config = sidebar.train_config(ref)
    model_config = config.model_config(ds.n_features, ds.n_labels)
    mem = head_memory(model_config, config.batch_size)
    dense = sidebar.train_config(ref, head="dense", dst="none")   # the baseline
    dense_mem = head_memory(dense.model_config(ds.n_features, ds.n_labels), dense.batch_size)
except ConfigError as e:
    st.error(f"These settings do not make a model: {text.md(e)}")
    st.stop()

m = st.columns(4)
m[0].metric("Head parameters", f"{head_params(model_config):,}")
m[1].metric("Head memory in training", teaching.fmt_bytes(mem["total"]),
            delta=f"{mem['total'] / dense_mem['total']:.2f}x dense" if config.model.head.name != "dense" else None,
            delta_color="off")
m[2].metric("Labels L / inputs d", f"{ds.n_labels:,} / {model_config.head_in:,}")
m[3].metric("Steps", f"{config.epochs * -(-ds.n_train // config.batch_size):,}")
teaching.note(
    "The memory estimate counts the head only: weights and biases, the index sets of a sparse head (int32), "
    "one gradient per weight and Adam's two moments per weight. A dense head also holds the B x L logits, their "
    "gradient and the dense targets; a sparse head trains with the fused loss, which never holds the logits: "
    "it keeps its gradients from forward to backward and a few B x d buffers. A dense head needs (d+1)·L "
    "weights; a sparse one k+1 per label and k indices per group of m labels."
)

# --- controls -------------------------------------------------------------------------------
store = registry.jobs().store
entries = registry.run_entries()                # every run, a broken one with its error
ids = [e.run.id for e in entries]
b = st.columns([1, 1, 1, 1, 4])
b[0].button("Start", type="primary", on_click=start, key="start", icon=":material/play_arrow:")
if ids:                                   # created before reading ss["run"]: a URL's ?run= seeds it here
    b[4].selectbox("Run", ids, key="run", bind="query-params", label_visibility="collapsed",
                   help="the run shown below; runs are stored, so a reload finds them")
current = ss.get("run") if ss.get("run") in ids else None
job = registry.jobs().get(current) if current else None
live = job is not None and job.alive
paused = live and job.paused
b[1].button("Resume" if paused else "Pause", on_click=control, args=("resume" if paused else "pause",),
            disabled=not live, key="pause", icon=":material/pause:" if not paused else ":material/play_arrow:")
b[2].button("Step", on_click=control, args=("step",), disabled=not paused, key="step",
            help="while paused: one training step", icon=":material/skip_next:")
b[3].button("Stop", on_click=control, args=("stop",), disabled=not live, key="stop", icon=":material/stop:")
if ss.get("train_error"):
    st.error(text.md(ss.train_error))
if warmup.warm_stage() != "done":
    st.caption("Warming up in the background (once after the server starts: training kernels, then UMAP); "
               "a Start now may take a few seconds longer.")

if not ids:
    st.info("No runs yet: press Start to train the head set in the sidebar on this dataset.")
    config_box()
    st.stop()
run_id = ss.get("run") or ids[0]


@st.fragment(run_every=REFRESH_S if live else None)
def live_view(run_id):
    try:
        run = store.get(run_id)
        records = run.records()
    except XMCError as e:
        st.error(text.md(e))
        return
    state = registry.jobs().state(run)
    steps, evals, other = analysis.split_records(records)
    last_step = steps[-1]["step"] if steps else 0
    info = read_status(run.path)
    total = info.get("total_steps")
    st.markdown(f"**{text.md(run_id)}** · {state} · step {last_step:,}" + (f" of {total:,}" if total else "") +
                f" · {len(steps)} steps, {len(evals)} evaluations recorded")
    device = analysis.run_device(records)
    if device:
        st.caption(f"Device: **{text.md(device[0])}** · {text.md(device[1])}")
    if info.get("error"):
        st.error(f"The run failed: {text.md(info['error'])}")
    if evals:
        last = evals[-1]
        cols = st.columns(6)
        for col, key in zip(cols, ("P@1", "P@3", "P@5", "nDCG@5", "PSP@5")):
            if key in last:
                col.metric(key, f"{100 * last[key]:.2f}")
        if steps:
            cols[5].metric("ms / step", f"{1e3 * sum(r['step_time'] for r in steps[-20:]) / len(steps[-20:]):.1f}")
    metrics = [k for k in figures.METRIC_ORDER if evals and k in evals[-1]][:4] or ["P@1"]
    st.plotly_chart(figures.training_curves(steps, evals, metrics), key="live_curves")
    if steps and not teaching.classroom():
        st.plotly_chart(figures.step_times(steps), key="step_times")
    if other.get("dst"):
        st.plotly_chart(figures.dst_changes(other["dst"]), key="live_dst")
    if ss.get("live_run") == run_id and state not in LIVE:
        ss.live_run = None
        st.rerun(scope="app")                           # the buttons follow the finished run


if live:
    ss.live_run = current
live_view(run_id)

# --- runs -----------------------------------------------------------------------------------
st.subheader("Runs")
rows = []
for r, cfg, recs, error in entries:
    if error:
        rows.append({"run": r.id, "state": f"broken: {error}"})
        continue
    ev = analysis.last_eval(recs)
    flat = cfg.flat()
    rows.append({"run": r.id, "head": flat["head"], "data": "sample" if cfg.data == "sample" else cfg.data.split("/")[-1],
                 "state": registry.jobs().state(r), "k": flat.get("fanin"), "m": flat.get("group_size"),
                 "steps": max((x["step"] for x in recs if x.get("kind") == "step"), default=0),
                 "P@1": None if ev is None else round(100 * ev.get("P@1", 0), 2),
                 "P@5": None if ev is None else round(100 * ev.get("P@5", 0), 2)})
st.dataframe(pd.DataFrame(rows), hide_index=True, key="runs_table")
o = st.columns([3, 1])
readable = {e.run.id: e.records for e in entries if not e.error}
chosen = o[0].multiselect("Overlay runs", list(readable), default=[run_id] if run_id in readable else [],
                          key="overlay", max_selections=8)
metric = o[1].selectbox("Metric", ["P@1", "P@3", "P@5", "nDCG@5", "PSP@5", "loss"], key="overlay_metric")
if chosen:
    series = {}
    for rid in chosen:
        steps, evals, _ = analysis.split_records(readable[rid])
        series[rid] = steps if metric == "loss" else evals
    st.plotly_chart(figures.overlay(series, metric), key="overlay_chart")

config_box()
