"""Pure figure functions: data in, Plotly figure out. No Streamlit, no engine state, so tests call
them directly and pages only draw what they return. Every name a figure is given (labels, features,
runs, heads, providers) goes through app.text.plotly, so hover labels, ticks and legends show it as
written, never as a tag or a link."""

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.text import plotly as esc

PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D"]
METRIC_ORDER = ("P@1", "P@3", "P@5", "nDCG@3", "nDCG@5", "PSP@1", "PSP@3", "PSP@5")


def _names(names):
    """User text, one per label, input or run, made safe for Plotly's text (app.text.plotly)."""
    return [esc(n) for n in names]


def _layout(fig, title=None, height=380, **kw):
    fig.update_layout(title=title, height=height, margin=dict(l=50, r=20, t=50 if title else 20, b=45),
                      template="plotly_white", legend=dict(orientation="h", y=-0.18), **kw)
    return fig


# ---------------------------------------------------------------------------------------------
# data

def label_frequency(counts):
    """Log-log rank-frequency curve of label counts (the long tail)."""
    c = np.sort(np.asarray(counts))[::-1]
    c = c[c > 0]
    rank = np.arange(1, len(c) + 1)
    fig = go.Figure(go.Scatter(x=rank, y=c, mode="lines", name="labels",
                               hovertemplate="rank %{x}<br>%{y} training points<extra></extra>"))
    fig.update_xaxes(type="log", title="label rank (most frequent first)")
    fig.update_yaxes(type="log", title="training points with the label")
    return _layout(fig, "Label frequency: the long tail")


def histogram(values, title, xlabel, nbins=40):
    """Histogram of per-point (or per-feature) counts."""
    fig = go.Figure(go.Histogram(x=np.asarray(values), nbinsx=nbins, marker_color=PALETTE[0]))
    fig.update_xaxes(title=xlabel)
    fig.update_yaxes(title="count")
    return _layout(fig, title, bargap=0.05)


# ---------------------------------------------------------------------------------------------
# training

def training_curves(steps, evals, metrics=("P@1", "P@3", "P@5")):
    """Live view of one run: loss per step (left) and the chosen metrics per evaluation (right)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "test metrics"))
    fig.add_trace(go.Scatter(x=[r["step"] for r in steps], y=[r["loss"] for r in steps], mode="lines",
                             name="loss", line=dict(color=PALETTE[0])), row=1, col=1)
    for i, m in enumerate(metrics):
        pts = [(r["step"], r[m]) for r in evals if m in r]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                 name=m, line=dict(color=PALETTE[(i + 1) % len(PALETTE)])), row=1, col=2)
    fig.update_xaxes(title="step")
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    return _layout(fig, height=360)


def step_times(steps):
    """Milliseconds per training step."""
    fig = go.Figure(go.Scatter(x=[r["step"] for r in steps], y=[1e3 * r["step_time"] for r in steps],
                               mode="lines", name="ms / step", line=dict(color=PALETTE[2])))
    fig.update_xaxes(title="step")
    fig.update_yaxes(title="ms per step", rangemode="tozero")
    return _layout(fig, height=240)


def overlay(runs, metric="P@1"):
    """One line per run: `runs` maps a label to its eval records (or step records for "loss")."""
    fig = go.Figure()
    for i, (name, records) in enumerate(runs.items()):
        pts = [(r["step"], r[metric]) for r in records if metric in r]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers"
                                 if metric != "loss" else "lines", name=esc(name),
                                 line=dict(color=PALETTE[i % len(PALETTE)])))
    fig.update_xaxes(title="step")
    fig.update_yaxes(title=metric)
    return _layout(fig, f"{metric}, runs overlaid")


# ---------------------------------------------------------------------------------------------
# label map and connectivity

def label_map(xy, names, freq, groups=None, highlight=None, title=None, values=None, value_name=None,
              category="group"):
    """Scatter of labels in 2-D, size growing with log frequency. Hover: name, frequency, and the
    label's `category` id (its group, or its cluster). Colour: the categories (mod a palette); with
    `values` (one per label: log frequency, recall) a continuous scale named value_name, labels whose
    value is NaN in grey; `highlight` (a category id) is drawn on top in a strong colour, the rest
    greyed. customdata[3] of each point is its row of xy, so a click finds its label."""
    xy = np.asarray(xy)
    n = len(xy)
    groups = np.full(n, -1) if groups is None else np.asarray(groups)
    shown = np.full(n, np.nan) if values is None else np.asarray(values, float)
    custom = np.stack([np.asarray(_names(names), dtype=object), np.asarray(freq), groups, np.arange(n),
                       np.array(["none" if np.isnan(v) else f"{v:.3f}" for v in shown], dtype=object)], axis=1)
    hover = (f"%{{customdata[0]}}<br>frequency %{{customdata[1]}}<br>{category} %{{customdata[2]}}"
             + (f"<br>{esc(value_name)} %{{customdata[4]}}" if values is not None else "") + "<extra></extra>")
    size = 4 + 6 * np.log1p(np.asarray(freq, float)) / max(1.0, np.log1p(np.max(freq) if n else 1))
    opacity = 0.75 if n <= 3000 else 0.5                                  # many points: see the density

    def points(on, name, **marker):
        fig.add_trace(go.Scattergl(x=xy[on, 0], y=xy[on, 1], mode="markers", customdata=custom[on],
                                   hovertemplate=hover, name=name, marker=marker))

    fig = go.Figure()
    if highlight is not None:
        on = groups == highlight
        points(~on, "other labels", size=size[~on], color="#C8C8C8", opacity=0.5)
        points(on, f"{category} {highlight}", size=size[on] + 4, color=PALETTE[3], line=dict(width=1, color="black"))
    elif values is not None:
        known = ~np.isnan(shown)
        points(~known, f"no {esc(value_name)}", size=size[~known], color="#C8C8C8", opacity=0.5)
        points(known, esc(value_name), size=size[known], color=shown[known], colorscale="Viridis", opacity=opacity,
               colorbar=dict(title=esc(value_name), thickness=12))
    else:
        color = groups % len(PALETTE) if (groups >= 0).any() else np.zeros(n, int)
        points(np.ones(n, bool), "labels", size=size, color=[PALETTE[c] for c in color], opacity=opacity)
    fig.update_xaxes(showticklabels=False, title=None)
    fig.update_yaxes(showticklabels=False, title=None, scaleanchor="x")
    return _layout(fig, title, height=620, showlegend=highlight is not None or values is not None)


def connectivity_heatmap(rows, M, sampled=False, inputs=None):
    """Groups (rows) x inputs (columns): dark where a group reads an input; `inputs` names the
    columns (default: hidden units h0, h1, ...)."""
    inputs = _names(inputs) if inputs else [f"h{i}" for i in range(M.shape[1])]
    fig = go.Figure(go.Heatmap(z=M, x=inputs, y=[f"group {g}" for g in rows],
                               colorscale=[[0, "#FFFFFF"], [1, "#1F3B73"]], showscale=False,
                               hovertemplate="%{y} reads %{x}: %{z}<extra></extra>"))
    title = f"{len(rows)} groups x {M.shape[1]} inputs" + (" (groups sampled at random)" if sampled else "")
    fig.update_xaxes(showticklabels=False, title="input")
    fig.update_yaxes(showticklabels=False, title="group", autorange="reversed")
    return _layout(fig, title, height=420)


def reuse_histogram(counts, expected=None):
    """How many groups read each input; `expected` (G·k/d for random sets) as a dashed line."""
    fig = go.Figure(go.Histogram(x=np.asarray(counts), marker_color=PALETTE[4], name="inputs"))
    if expected is not None:
        fig.add_vline(x=expected, line_dash="dash", annotation_text=f"random: {expected:.1f}")
    fig.update_xaxes(title="groups reading the input")
    fig.update_yaxes(title="inputs")
    return _layout(fig, "Input reuse", bargap=0.05)


def group_weights(W, inputs, labels):
    """Heatmap of one group's weights W (m, k): labels x the inputs they share."""
    lim = float(np.abs(W).max()) or 1.0
    fig = go.Figure(go.Heatmap(z=W, x=_names(inputs), y=_names(labels), colorscale="RdBu", zmid=0,
                               zmin=-lim, zmax=lim))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, "the group's weights W[g] (labels x shared inputs)", height=max(300, 22 * len(labels)))


def dst_changes(records):
    """Connections changed per dynamic-sparsity update, over training steps."""
    keys = [k for k in ("dropped", "changed", "n_changed", "replaced") if records and k in records[0]]
    key = keys[0] if keys else None
    fig = go.Figure(go.Bar(x=[r["step"] for r in records], y=[r.get(key, 0) for r in records],
                           marker_color=PALETTE[1]))
    fig.update_xaxes(title="step")
    fig.update_yaxes(title=f"connections {key or 'changed'}")
    return _layout(fig, "Dynamic sparse training: connections changed per update", height=300)


# ---------------------------------------------------------------------------------------------
# compare

PARTS = ("params", "index", "grads", "optimizer", "logits", "loss")


def memory_bars(analytic, measured=None):
    """Stacked bars of head memory by part, one bar per head; measured totals as diamonds."""
    heads = list(analytic)
    fig = go.Figure()
    for i, part in enumerate(PARTS):
        fig.add_trace(go.Bar(x=_names(heads), y=[analytic[h].get(part, 0) / 2**20 for h in heads], name=part,
                             marker_color=PALETTE[i % len(PALETTE)]))
    if measured:
        hs = [h for h in heads if h in measured]
        fig.add_trace(go.Scatter(x=_names(hs), y=[measured[h]["total"] / 2**20 for h in hs], mode="markers",
                                 name="measured (persistent tensors)",
                                 marker=dict(symbol="diamond", size=13, color="black")))
    fig.update_yaxes(title="MiB")
    return _layout(fig, "Head memory during training (analytic, by part)", barmode="stack")


def bench_lines(rows, what="fwd_bwd_s"):
    """Time (ms) against the number of labels, one line per provider, log-log."""
    fig = go.Figure()
    providers = list(dict.fromkeys(r["provider"] for r in rows))
    for i, p in enumerate(providers):
        pts = sorted((r["n_labels"], r[what]) for r in rows if r["provider"] == p)
        fig.add_trace(go.Scatter(x=[a for a, _ in pts], y=[1e3 * b for _, b in pts], mode="lines+markers",
                                 name=esc(p), line=dict(color=PALETTE[i % len(PALETTE)])))
    fig.update_xaxes(type="log", title="labels L")
    fig.update_yaxes(type="log", title=f"{'forward + backward' if what == 'fwd_bwd_s' else 'forward'} (ms)")
    return _layout(fig, "Micro-benchmark: time per batch")


def pareto(points):
    """P@1 against head memory, one marker per run (points: dicts run, head, memory, p1)."""
    fig = go.Figure()
    heads = list(dict.fromkeys(p["head"] for p in points))
    for i, h in enumerate(heads):
        ps = [p for p in points if p["head"] == h]
        fig.add_trace(go.Scatter(x=[p["memory"] / 2**20 for p in ps], y=[p["p1"] for p in ps], mode="markers",
                                 name=esc(h), text=_names(p["run"] for p in ps),
                                 marker=dict(size=11, color=PALETTE[i % 8]),
                                 hovertemplate="%{text}<br>%{x:.2f} MiB<br>P@1 %{y:.3f}<extra></extra>"))
    fig.update_xaxes(type="log", title="head memory in training (MiB)")
    fig.update_yaxes(title="P@1 (last evaluation)", rangemode="tozero")
    return _layout(fig, "Runs: accuracy against memory (up and left is better)")


def time_to_accuracy(curves, peers, metric="P@1"):
    """Test `metric` (%) against training seconds (log scale): a line per run, curves = {name:
    [(seconds, score in [0, 1]), ...]} (one point per evaluation), and a marker per peer, peers =
    {name: (seconds, score in [0, 1])} (its one trained model)."""
    fig, hover = go.Figure(), "%{x:.1f} s<br>" + metric + " %{y:.2f}<extra></extra>"
    for i, (name, points) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=[s for s, _ in points], y=[100 * v for _, v in points], mode="lines+markers",
                                 name=esc(name), line=dict(color=PALETTE[i % 8]), hovertemplate=hover))
    for j, (name, (seconds, score)) in enumerate(peers.items()):
        fig.add_trace(go.Scatter(x=[seconds], y=[100 * score], mode="markers", name=esc(name),
                                 marker=dict(size=13, symbol="diamond", color=PALETTE[(len(curves) + j) % 8]),
                                 hovertemplate=hover))
    fig.update_xaxes(type="log", title="training seconds")
    fig.update_yaxes(title=f"test {metric} (%)")
    return _layout(fig, f"Time to accuracy: test {metric} against training time (up and left is better)")


# ---------------------------------------------------------------------------------------------
# fast inference

# measure of an engine.lss.report -> (bar label, scale to %)
LSS_MEASURES = {"cand_pct": ("candidates (% of labels)", 1.0), "recall": ("recall of true labels (%)", 100.0),
                "P@1_ratio": ("P@1 / exact P@1 (%)", 100.0)}


def lss_bars(rows):
    """Hash indexes side by side (rows: engine.lss.report dicts with "index"), in %: the candidates
    scored (lower is faster), the true labels among them and P@1 against exact scoring (higher is
    better); one group of bars per measure, one colour per index."""
    fig = go.Figure()
    labels = [label for label, _ in LSS_MEASURES.values()]
    for i, r in enumerate(rows):
        fig.add_trace(go.Bar(x=labels, y=[scale * r[m] for m, (_, scale) in LSS_MEASURES.items()], name=esc(r["index"]),
                             marker_color=PALETTE[i % len(PALETTE)], texttemplate="%{y:.1f}", textposition="outside"))
    fig.update_yaxes(title="%", rangemode="tozero")
    return _layout(fig, "Hash indexes against exact scoring", barmode="group")


# ---------------------------------------------------------------------------------------------
# the tail

def tail_bins(reports, k):
    """Runs side by side per label-frequency bin (reports: {run name: engine.tail_by_frequency rows},
    all of one dataset): left, the share of each run's correct top-k predictions that falls in the
    bin, with the share of the test's (point, label) pairs as the dashed reference; right, the
    recall@k of the bin's labels. Ticks: the bin and the training frequencies it spans."""
    rows = next(iter(reports.values()))
    x = [r["bin"] for r in rows]
    ticks = [f"{r['bin']}<br>{r['min_count']:,}-{r['max_count']:,}" for r in rows]
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"share of the correct top-{k} predictions (%)",
                                                        f"recall@{k} of the bin's labels (%)"))
    for i, (name, rs) in enumerate(reports.items()):
        color, hover = PALETTE[i % len(PALETTE)], "bin %{x}: %{y:.1f}%"      # the run's name beside it
        fig.add_trace(go.Bar(x=x, y=[100 * r["hit_share"] for r in rs], name=esc(name), marker_color=color,
                             legendgroup=str(i), hovertemplate=hover), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=[100 * r["recall"] for r in rs], mode="lines+markers", name=esc(name),
                                 line=dict(color=color), legendgroup=str(i), showlegend=False, hovertemplate=hover),
                      row=1, col=2)
    fig.add_trace(go.Scatter(x=x, y=[100 * r["pair_share"] for r in rows], mode="lines+markers",
                             name="share of the test's labels", line=dict(color="black", dash="dash"),
                             hovertemplate="bin %{x}: %{y:.1f}% of the test's (point, label) pairs<extra></extra>"),
                  row=1, col=1)
    fig.update_xaxes(tickvals=x, ticktext=ticks, title="label bin (1 = most frequent) and its training counts")
    fig.update_yaxes(rangemode="tozero")
    return _layout(fig, height=420, barmode="group")


def propensity_weights(counts, weights, chosen=None):
    """The weight 1/p_l PSP@k gives a label against its training count N_l, one line per set of
    constants (weights: {name: (L,) inverse propensities}); `chosen` drawn thicker."""
    counts = np.asarray(counts)
    order = np.argsort(counts, kind="stable")
    fig = go.Figure()
    for i, (name, w) in enumerate(weights.items()):
        fig.add_trace(go.Scatter(x=counts[order] + 1, y=np.asarray(w)[order], mode="lines", name=esc(name),
                                 line=dict(color=PALETTE[i % len(PALETTE)], width=4 if name == chosen else 1.5),
                                 hovertemplate="N_l = %{customdata}<br>1/p = %{y:.2f}<extra></extra>",
                                 customdata=counts[order]))
    fig.update_xaxes(type="log", title="training points with the label, N_l + 1")
    fig.update_yaxes(title="PSP weight 1/p_l", rangemode="tozero")
    return _layout(fig, "How much PSP@k rewards finding a label", height=340)
