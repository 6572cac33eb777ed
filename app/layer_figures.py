"""Pure figures of the layer drawn small and of one label inspected: data in, Plotly figure out.

A layer is drawn as columns: its inputs (left), for a group-shared layer the gathered block of each
group (middle: the k inputs it reads, fetched once), and its labels (right), with every connection
a line. Dense joins every input to every label; fixed fan-in joins k inputs to each label; group-
shared joins k inputs to each group's block and the block to the group's m labels, which all reuse
it. Colours are the groups. Names go through app.text.plotly."""

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.figures import PALETTE, _layout, _names
from app.teaching import fmt_bytes

TITLES = {"dense": "dense", "fixed_fanin": "fixed fan-in", "group_shared": "group-shared"}
CHANGE = {"kept": "#9A9A9A", "added": "#2CA02C", "dropped": "#D62728"}


def _ys(n):
    """n positions from 1 (top) to 0, evenly spaced."""
    return np.linspace(1, 0, n) if n > 1 else np.array([0.5])


def _lines(fig, col, pairs, xs, ys, color, width=1, dash=None, name=None):
    """One trace of straight segments (x0, y0) -> (x1, y1), pairs (n, 2) of node ids per column."""
    x = np.full((len(pairs), 3), np.nan)
    y = np.full((len(pairs), 3), np.nan)
    if len(pairs):
        x[:, 0], x[:, 1] = xs[0], xs[1]
        y[:, 0], y[:, 1] = ys[0][pairs[:, 0]], ys[1][pairs[:, 1]]
    fig.add_trace(go.Scatter(x=x.ravel(), y=y.ravel(), mode="lines", hoverinfo="skip", showlegend=name is not None,
                             name=name, line=dict(color=color, width=width, dash=dash)), row=1, col=col)


def _nodes(fig, col, x, ys, names, colors, symbol="circle", size=11):
    fig.add_trace(go.Scatter(x=np.full(len(ys), x), y=ys, mode="markers", text=_names(names), showlegend=False,
                             hovertemplate="%{text}<extra></extra>",
                             marker=dict(size=size, color=colors, symbol=symbol, line=dict(width=1, color="#333"))),
                  row=1, col=col)


def _group_colors(n):
    return [PALETTE[g % len(PALETTE)] for g in range(n)]


def _draw(fig, col, d, L, m, idx, input_names=None, label_names=None, changes=None):
    """One layer in column `col`: idx (G, k) the sets (None: dense), m labels per group (label
    l = g·m + j); changes: {"kept", "added", "dropped"} (G, k) bool masks of the connections to draw
    in each kind's colour (default: all, in the group's colour)."""
    xi, xg, xl = 0.0, 0.5, 1.0
    yi, yl = _ys(d), _ys(L)
    inputs = input_names or [f"input {i}" for i in range(d)]
    labels = label_names or [f"label {l}" for l in range(L)]
    if idx is None:                                                    # every input to every label
        pairs = np.stack(np.meshgrid(np.arange(d), np.arange(L), indexing="ij"), -1).reshape(-1, 2)
        _lines(fig, col, pairs, (xi, xl), (yi, yl), "#B0B8C8", width=0.6)
        _nodes(fig, col, xi, yi, inputs, "#FFFFFF")
        _nodes(fig, col, xl, yl, labels, PALETTE[0])
        return
    G, k = idx.shape
    group = np.arange(L) // m                                          # (L,)
    colors = _group_colors(G)
    if m == 1:                                                         # fixed fan-in: inputs to labels
        xe, ye = xl, yl
    else:                                                              # group-shared: inputs to blocks
        xe, ye = xg, np.array([yl[group == g].mean() for g in range(G)])
    for g in range(G):
        pairs = np.stack([idx[g], np.full(k, g)], 1)
        if changes is None:
            _lines(fig, col, pairs, (xi, xe), (yi, ye), colors[g], width=1.5)
            continue
        for kind, mask in ((kind, changes[kind][g]) for kind in CHANGE):
            if mask.any():
                _lines(fig, col, pairs[mask], (xi, xe), (yi, ye), CHANGE[kind], width=2.5 if kind != "kept" else 1.5,
                       dash="dot" if kind == "dropped" else None)
    if m > 1:
        _lines(fig, col, np.stack([group, np.arange(L)], 1), (xg, xl), (ye, yl), "#555555", width=1)
        _nodes(fig, col, xg, ye, [f"group {g}: its gathered block of inputs, read once, used by its "
                                  f"{int((group == g).sum())} labels" for g in range(G)],
               colors, symbol="square", size=18)
    _nodes(fig, col, xi, yi, inputs, "#FFFFFF")
    _nodes(fig, col, xl, yl, [f"{labels[l]} (group {group[l]})" for l in range(L)], [colors[g] for g in group])


def layer_diagram(layers):
    """The layers side by side (engine.layer_view.SmallLayer each): every connection, the groups,
    and under each the bytes its forward pass reads (layer.reads, at the layer's batch)."""
    fig = make_subplots(rows=1, cols=len(layers), horizontal_spacing=0.06,
                        subplot_titles=[TITLES.get(s.head, s.head) for s in layers])
    for c, s in enumerate(layers, start=1):
        _draw(fig, c, s.d, s.L, s.m, s.idx)
        r = s.reads
        fig.add_annotation(text=f"reads {fmt_bytes(r['total'])}: weights {fmt_bytes(r['weights'])}, index "
                                f"{fmt_bytes(r['index'])}, inputs {fmt_bytes(r['inputs'])}",
                           xref=f"x{c if c > 1 else ''} domain", yref="paper", x=0.5, y=-0.06, showarrow=False,
                           font=dict(size=12))
    fig.update_xaxes(visible=False, range=[-0.1, 1.1])
    fig.update_yaxes(visible=False, range=[-0.05, 1.05])
    _layout(fig, height=560, showlegend=False)
    return fig.update_layout(margin=dict(l=10, r=10, t=40, b=50))


def replay_diagram(before, after, m, input_ids, input_names, label_names):
    """Groups of a DST run between two updates: before, after (n, k) their sets (engine.index_history),
    drawn over the inputs `input_ids` (every input they read in the replay), m labels per group;
    lines kept grey, added green, dropped red (dotted, at their old input)."""
    pos = {int(i): p for p, i in enumerate(input_ids)}
    local = np.vectorize(pos.get, otypes=[np.int64])
    n, k = after.shape
    # each group has 2k places: its k inputs after the update (kept or added), then the old input of
    # each slot that moved (dropped); the places of slots that did not move are in no mask (not drawn)
    changed = before != after                                          # (n, k) slots that moved
    none = np.zeros_like(changed)
    sets = np.concatenate([local(after), local(before)], 1)            # (n, 2k)
    masks = {"kept": np.concatenate([~changed, none], 1), "added": np.concatenate([changed, none], 1),
             "dropped": np.concatenate([none, changed], 1)}
    fig = make_subplots(rows=1, cols=1)
    _draw(fig, 1, len(input_ids), n * m, m, sets, input_names=input_names, label_names=label_names, changes=masks)
    for kind, color in CHANGE.items():                                 # the legend
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=kind,
                                 line=dict(color=color, width=3, dash="dot" if kind == "dropped" else None)))
    fig.update_xaxes(visible=False, range=[-0.1, 1.1])
    fig.update_yaxes(visible=False, range=[-0.05, 1.05])
    return _layout(fig, height=min(1400, max(360, 14 * len(input_ids))), showlegend=True)


def label_weights(inputs, weights, max_inputs=30):
    """Bars of one label's weights on the inputs it reads, strongest first (at most max_inputs)."""
    inputs, weights = list(inputs)[:max_inputs], np.asarray(weights)[:max_inputs]
    fig = go.Figure(go.Bar(x=weights, y=_names(inputs), orientation="h",
                           marker_color=[PALETTE[0] if w >= 0 else PALETTE[3] for w in weights],
                           hovertemplate="%{y}: %{x:.4f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title="weight")
    return _layout(fig, "the inputs it reads and their weights", height=max(300, 18 * len(inputs) + 90))
