"""Compare: memory per head (analytic next to measured), a live micro-benchmark, runs as a Pareto view,
the peers' stored results (python -m engine peers) beside our runs."""

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from engine import PEER_RESULTS_FILE, ConfigError, XMCError, check_bytes, read_peer_results

from app import analysis, datasets, figures, registry, settings, sidebar, teaching, text

teaching.intro(
    "Compare",
    "What does sparsity buy? A dense head stores d+1 numbers per label; a fixed fan-in or group-shared head "
    "stores k+1, plus k indices per group. Training multiplies that: a gradient per weight and Adam's two "
    "moments. The logits, B x L numbers per batch, are the same for every head.",
    r"M_{\text{head}} = 4\,\text{bytes}\cdot\big(\underbrace{P}_{\text{weights}} + \underbrace{P}_{\text{grads}} + "
    r"\underbrace{2P}_{\text{Adam}} + \underbrace{G k}_{\text{indices}} + \underbrace{2 B L}_{\text{logits, grad}}\big),"
    r"\qquad P_{\text{dense}} = (d+1)L,\quad P_{\text{sparse}} = (k+1)L",
)
ss = st.session_state
ds, ref = datasets.dataset_or_stop()

# --- memory ---------------------------------------------------------------------------------
st.subheader("Memory per head")
try:
    base = sidebar.train_config(ref)
    d = base.model_config(ds.n_features, ds.n_labels).head_in               # the width the head reads
    variants = analysis.head_variants(base)
    analytic = {h: analysis.memory_estimate(c, ds.n_features, ds.n_labels) for h, c in variants.items()}
except ConfigError as e:
    st.error(f"These settings do not make a model: {text.md(e)}")
    st.stop()
measured_key = (ref, tuple(sorted(base.to_dict().items())))
if st.button("Measure the real tensors", key="measure",
             help="builds each head, runs one Adam step of its training loss on a random batch and adds up the "
                  "tensors that persist (parameters, indices, gradients, Adam state)"):
    try:
        check_bytes(max(a["total"] for a in analytic.values()), "Measuring the heads' tensors")
        with st.spinner("Measuring ..."):
            ss.measured = (measured_key, {h: analysis.measure_memory(c, ds.n_features, ds.n_labels)
                                          for h, c in variants.items()})
    except XMCError as e:
        st.error(text.md(e))
measured = ss.measured[1] if ss.get("measured") and ss.measured[0] == measured_key else None
rows = []
for h, a in analytic.items():
    row = {"head": settings.HEAD_NAMES.get(h, h), **{p: teaching.fmt_bytes(a.get(p, 0)) for p in figures.PARTS},
           "total": teaching.fmt_bytes(a["total"])}
    if measured:
        persistent = sum(a[p] for p in analysis.PERSISTENT)
        row["measured persistent"] = teaching.fmt_bytes(measured[h]["total"])
        row["measured / analytic persistent"] = f"{measured[h]['total'] / persistent:.3f}"
    rows.append(row)
st.dataframe(pd.DataFrame(rows), hide_index=True, key="memory_table")
st.plotly_chart(figures.memory_bars({settings.HEAD_NAMES.get(h, h): a for h, a in analytic.items()},
                                    {settings.HEAD_NAMES.get(h, h): m for h, m in measured.items()} if measured else None),
                key="memory_bars")
k, m = (base.flat().get(name, settings.default(name)) for name in ("fanin", "group_size"))
st.caption(f"d = {d}, L = {ds.n_labels:,}, k = {k}, m = {m}, B = {base.batch_size}, "
           "float32 weights, int32 indices. Measured: bytes of the real parameter, index, gradient, Adam-state "
           "and logit tensors after one step.")

# --- benchmark ------------------------------------------------------------------------------
st.subheader("Micro-benchmark")
c = st.columns([2, 1, 1])
counts = c[0].multiselect("Label counts", [1000, 2000, 4000, 8000, 16000, 32000, 64000], [1000, 4000, 16000],
                          key="bench_L", bind="query-params")
batch = c[1].select_slider("Batch B", [16, 32, 64, 128, 256], 64, key="bench_B", bind="query-params")
repeats = c[2].slider("Repeats", 1, 10, 3, key="bench_reps", bind="query-params")
teaching.note("Each provider is first checked against a dense emulation of the same layer, then timed: forward, "
            "and forward + backward, median of the repeats after a warm-up. nn.Linear is the dense baseline; "
            "torch.sparse holds the same L·k nonzeros as the fixed fan-in head.")
if st.button("Run the benchmark", key="run_bench", type="primary", disabled=not counts):
    bar = st.progress(0.0, text="starting ...")
    try:
        ss.bench_rows = analysis.run_bench(sorted(counts), progress=lambda i, n, t: bar.progress(i / n, text=t),
                                      batch=batch, in_features=d, fanin=min(k, d),
                                      group_size=m, repeats=repeats)
    except (XMCError, ValueError, AssertionError) as e:
        st.error(f"The benchmark stopped: {text.md(e)}")
if ss.get("bench_rows"):
    st.plotly_chart(figures.bench_lines(ss.bench_rows), key="bench_chart")
    st.dataframe(pd.DataFrame(ss.bench_rows)[["provider", "n_labels", "forward_s", "fwd_bwd_s", "ratio_to_dense",
                                         "max_rel_err"]], hide_index=True, key="bench_table")

# --- runs -----------------------------------------------------------------------------------
st.subheader("Runs: accuracy against memory")
points, broken, ours, curves = [], [], [], {}
SCORES = ("P@1", "P@3", "P@5", "PSP@5")                           # the columns runs and peers share
for run, cfg, records, error in registry.run_entries():
    if error:
        broken.append(f"{run.id} ({error})")
        continue
    ev = analysis.last_eval(records)
    run_ds = datasets.dataset_by_ref(cfg.data)
    if ev is None or run_ds is None:
        continue
    ours.append({"dataset": run_ds.name, "method": f"{cfg.model.head.name} ({run.id})",
                 **{s: 100 * ev[s] for s in SCORES if s in ev},
                 "train s": sum(r.get("step_time", 0.0) for r in records if r.get("kind") == "step")})
    curves.setdefault(run_ds.name, {})[ours[-1]["method"]] = analysis.training_curve(records)
    try:
        memory = analysis.memory_estimate(cfg, run_ds.n_features, run_ds.n_labels)["total"]
    except ConfigError:
        continue
    points.append({"run": f"{run.id} ({run_ds.name})", "head": cfg.model.head.name, "memory": memory, "p1": ev.get("P@1", 0.0)})
if points:
    st.plotly_chart(figures.pareto(points), key="pareto")
else:
    st.info("No evaluated runs yet: train a few heads on the Train page to fill this view.")
if broken:
    st.warning(text.md(f"Not shown: {len(broken)} broken run(s), whose files do not read: " + "; ".join(broken)))

# --- peers ----------------------------------------------------------------------------------
st.subheader("Peers: the tree-based methods beside our runs")
peers_file = Path(os.environ.get("XMC_PEERS_FILE") or registry.REPO / PEER_RESULTS_FILE)
if not os.path.lexists(peers_file):
    st.info(text.md(f"No peers' results stored in {peers_file.name} yet: python -m engine peers --data DIR trains "
                    "PECOS XR-Linear, Omikuji and napkinXC PLT with their defaults and writes them there."))
else:
    try:
        stored = read_peer_results(peers_file)
    except XMCError as e:
        st.error(f"The peers' results do not read: {text.md(e)}")
    else:
        sets = {r["dataset"] for r in stored["rows"]}
        table = [{"dataset": r["dataset"], "method": r["peer"], **{s: 100 * r[s] for s in SCORES if s in r},
                  "train s": r["train_s"]} for r in stored["rows"]]
        table += [row for row in ours if row["dataset"] in sets]
        st.dataframe(pd.DataFrame(table).sort_values(["dataset", "P@1"], ascending=[True, False]).round(2),
                     hide_index=True, key="peers_table")
        st.caption("Test scores in %, training seconds. Peers measured by: " + text.md(stored["command"])
                   + "; our runs: the last evaluation of each stored run on the same datasets.")
        shown = st.selectbox("Time to accuracy on", sorted(sets), key="tta_dataset")
        st.plotly_chart(figures.time_to_accuracy(
            curves.get(shown, {}), {r["peer"]: (r["train_s"], r["P@1"]) for r in stored["rows"]
                                    if r["dataset"] == shown}), key="time_to_accuracy")
