"""The benchmark's report: the printed tables, report.json and a self-contained report.html.

    print(format_table(run_heads_bench(...)))          # one shape
    print(format_report(report))                       # run_bench's: every L and provider, targets
    write_report(report, "bench/report.json")          # and report.html beside it (Plotly, offline)
"""

import json
from pathlib import Path

from . import heads


def format_table(results):
    """The results of run_heads_bench as a plain-text table."""
    r0 = results[0]
    lines = [f"B={r0['batch']} d={r0['in_features']} L={r0['n_labels']:,} k={r0['fanin']} "
             f"m={r0['group_size']} float32, {r0['threads']} threads; median times",
             f"{'provider':<28}{'forward':>12}{'fwd+bwd':>12}{'vs nn.Linear':>14}{'nnz':>14}{'check':>10}"]
    for r in results:
        if r["fwd_bwd_s"] is None:
            lines.append(f"{r['provider']:<28}  skipped: {r.get('skipped')}")
            continue
        check = "-" if r["max_rel_err"] is None else f"{r['max_rel_err']:.0e}"
        ratio = "-" if r["ratio_to_dense"] is None else f"{r['ratio_to_dense']:.1f}x"
        lines.append(f"{r['provider']:<28}{r['forward_s'] * 1e3:>9.1f} ms{r['fwd_bwd_s'] * 1e3:>9.1f} ms"
                     f"{ratio:>14}{r['nnz']:>14,}{check:>10}")
    return "\n".join(lines)


def _fmt_t(t):
    return "-" if t is None else (f"{t * 1e3:.1f} ms" if t < 10 else f"{t:.1f} s")


def _fmt_x(v, nd=1):
    return "-" if v is None else f"{v:.{nd}f}x"


def format_report(report):
    """The printed table: per L and provider, times, ratios to nn.Linear, distance to the floor,
    peak memory; then the machine's peaks and the targets."""
    c, mach = report["config"], report["machine"]
    lines = [f"B={c['batch']} d={c['in_features']} k={c['fanin']} m={c['group_size']} float32, "
             f"{c['threads']} threads, median of {c['repeats']} (fewer past {c['budget_s']} s); peak {mach['peak_flops'] / 1e9:.0f} GFLOP/s "
             f"(torch.mm {mach['matmul_n']}), {mach['copy_bytes_per_s'] / 1e9:.1f} GB/s (copy)",
             f"{'L':>9}  {'provider':<27}{'fwd':>10}{'fwd+bwd':>10}{'step':>10}{'fb vs lin':>10}"
             f"{'step vs lin':>12}{'fb/floor':>9}{'step/floor':>11}{'peak RSS':>10}{'analytic':>10}{'check':>8}"]
    for r in report["results"]:
        peak = "-" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:.0f} MB"
        check = "-" if r["max_rel_err"] is None else f"{r['max_rel_err']:.0e}"
        head = f"{r['n_labels']:>9,}  {r['provider']:<27}"
        if r["skipped"]:
            lines.append(head + f"{'not run (memory)':>30}{'':>22}{'':>20}{'':>10}{r['analytic_step_mb']:>7.0f} MB{'':>8}")
            continue
        lines.append(head + f"{_fmt_t(r['forward_s']):>10}{_fmt_t(r['fwd_bwd_s']):>10}{_fmt_t(r['step_s']):>10}"
                     f"{_fmt_x(r['fwd_bwd_vs_dense']):>10}{_fmt_x(r['step_vs_dense']):>12}"
                     f"{_fmt_x(r['fwd_bwd_x_floor']):>9}{_fmt_x(r['step_x_floor']):>11}{peak:>10}"
                     f"{r['analytic_step_mb']:>7.0f} MB{check:>8}")
    lines.append("step: forward + BCE loss + backward + Adam (sparse heads: fused loss); peak RSS: the whole "
                 "process during one step, fresh subprocess; analytic: engine/memory.py, params + grads + Adam "
                 "(+ logits, dZ, targets if unfused; + the fused loss's gradients and buffers if fused)")
    lines.append("targets:")
    for t in report["targets"]:
        v = "not measured" if t["value"] is None else f"{t['value']:.2f}"
        verdict = {True: "met", False: "NOT met", None: "-"}[t["met"]]
        lines.append(f"  {t['name']}: {v} (bar {t['bar']:.2f}) {verdict}")
    return "\n".join(lines)


def write_report(report, path):
    """report.json at `path` and report.html beside it (Plotly; the JavaScript embedded: opens offline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(path)
    html = path.with_suffix(".html")
    html.write_text(report_html(report))
    return path, html


def report_html(report):
    """A self-contained HTML page: time per phase, ratios to the floor, peak memory, the table."""
    import plotly.graph_objects as go
    import plotly.io as pio
    from plotly.subplots import make_subplots
    rows = report["results"]
    kinds = list(dict.fromkeys(r["provider"] for r in rows))
    Ls = list(dict.fromkeys(r["n_labels"] for r in rows))
    fig = make_subplots(rows=2, cols=2, subplot_titles=("forward + backward (s)", "full training step (s)",
                                                        "measured / floor (fwd+bwd)", "peak process RSS of a step (MB)"))
    colors = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3"]
    for i, kind in enumerate(kinds):
        mine = [next((r for r in rows if r["provider"] == kind and r["n_labels"] == L), None) for L in Ls]
        xs = [f"{L:,}" for L in Ls]
        get = lambda key: [None if r is None else r.get(key) for r in mine]
        style = dict(name=kind, marker_color=colors[i % len(colors)], legendgroup=kind)
        fig.add_trace(go.Bar(x=xs, y=get("fwd_bwd_s"), **style), 1, 1)
        fig.add_trace(go.Bar(x=xs, y=get("step_s"), showlegend=False, **style), 1, 2)
        fig.add_trace(go.Bar(x=xs, y=get("fwd_bwd_x_floor"), showlegend=False, **style), 2, 1)
        mem = [r.get("peak_rss_mb") if r and r.get("peak_rss_mb") is not None else (r or {}).get("analytic_step_mb")
               for r in mine]
        pat = ["" if r and r.get("peak_rss_mb") is not None else "/" for r in mine]
        fig.add_trace(go.Bar(x=xs, y=mem, showlegend=False, marker_pattern_shape=pat, **style), 2, 2)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_yaxes(type="log", row=2, col=2)
    fig.update_xaxes(title_text="labels L")
    fig.update_layout(barmode="group", template="plotly_white", height=800,
                      title="Output heads: time, distance to the floor, memory (hatched: analytic, not run)")
    body = pio.to_html(fig, include_plotlyjs=True, full_html=False)
    table = format_report(report).replace("&", "&amp;").replace("<", "&lt;")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>engine bench</title></head><body>"
            f"<h2>python -m engine bench</h2>{body}<pre>{table}</pre>"
            f"<details><summary>how it is measured</summary><pre>{heads.__doc__}</pre></details></body></html>")
