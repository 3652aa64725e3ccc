"""The HTML report: one self-contained file (inline CSS, plots as base64 PNG from matplotlib's Agg
backend, no script, nothing fetched) for a `compare` report or a `debug` report.

* compare: the verdict table (backend x precision x output) and, per output, a histogram of
  |candidate - reference| on log-spaced bins. The histograms are not in the JSON report; pass them
  as `histograms={"ort:fp16:logits": error_histogram(ref, cand), ...}` or put
  `result.details["error_histograms"][output] = error_histogram(ref, cand)` in each result
  (`deployval.stats.error_histogram`; the pipeline fills the latter).
* debug: the first divergent layer, where the error is new and the triage verdict, a per-layer error
  curve (log scale) with the first divergent layer marked, the per-layer table, and the
  histograms of the final outputs.

Rendered from the JSON form (`to_dict()`), so a saved JSON report renders the same. matplotlib is
imported only here, and only when there is something to plot; without it the page keeps its tables
and findings and says that the plots need matplotlib.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._util import atomic_write_text
from .formatting import fmt, judge_text, memory_text, number, task_outcome_text

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2330;max-width:1400px}
h1{font-size:1.4em;margin:0 0 4px} h2{font-size:1.15em;margin:28px 0 8px}
.meta{color:#5b6475;font-size:.9em;margin:2px 0}
.verdict{display:inline-block;padding:4px 12px;border-radius:4px;font-weight:600;color:#fff}
.v-PASS{background:#1a7f37}.v-FAIL{background:#cf222e}.v-ERROR,.v-INCOMPLETE{background:#9a6700}
table{border-collapse:collapse;font-size:.86em;margin:8px 0}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;white-space:nowrap}
th{background:#f3f4f6} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.fail td{background:#ffebe9} tr.first td{background:#ffd7d5;font-weight:600} tr.muted td{color:#8c959f}
.s-pass,.s-reference{color:#1a7f37}.s-fail{color:#cf222e;font-weight:600}.s-error{color:#9a6700}
.s-skipped,.s-unmapped,.s-vanished{color:#8c959f}
.finding{border-left:4px solid #cf222e;padding:6px 12px;background:#fff8f7;margin:8px 0}
.ok{border-left:4px solid #1a7f37;padding:6px 12px;background:#f4fbf6;margin:8px 0}
.plots{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0} figcaption{font-size:.8em;color:#5b6475}
code{background:#f3f4f6;padding:1px 4px;border-radius:3px}
"""


# ----------------------------------------------------------------------------- histograms


def _as_histogram(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return dict(value)
    import numpy as np

    from ..stats import error_histogram

    diff = np.abs(np.asarray(value, dtype=np.float64))  # raw |c - r|
    return error_histogram(np.zeros_like(diff), diff)


# ----------------------------------------------------------------------------- plots


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def histogram_png(hist: Mapping[str, Any], title: str, atol: float | None = None) -> str:
    plt = pyplot()
    counts = list(hist.get("counts", []))
    low, per = float(hist.get("log10_low", -12)), float(hist.get("bins_per_decade", 4))
    edges = [10 ** (low + i / per) for i in range(len(counts) + 1)]
    used = [i for i, c in enumerate(counts) if c]
    figure, axis = plt.subplots(figsize=(4.6, 2.6))
    if used:
        first, last = max(used[0] - 1, 0), min(used[-1] + 2, len(counts))
        lefts, widths = edges[first:last], [edges[i + 1] - edges[i] for i in range(first, last)]
        axis.bar(lefts, counts[first:last], width=widths, align="edge", color="#4c72b0", edgecolor="white",
                 linewidth=0.4)
        axis.set_xscale("log")
    if atol:
        axis.axvline(atol, color="#cf222e", linestyle="--", linewidth=1, label=f"atol {atol:g}")
        axis.legend(fontsize=7, loc="upper left")
    extra = []
    if hist.get("below"):
        extra.append(f"{hist['below']} below 1e{int(low)} (≈0)")
    if hist.get("nonfinite"):
        extra.append(f"{hist['nonfinite']} non-finite")
    axis.set_title(title + (f"  [{', '.join(extra)}]" if extra else ""), fontsize=8)
    axis.set_xlabel("|candidate − reference|", fontsize=8)
    axis.set_ylabel("elements", fontsize=8)
    axis.tick_params(labelsize=7)
    return _png(figure)


def layer_curve_png(layers: list[Mapping[str, Any]], first: str | None, bound: float | None) -> str:
    """rel L2 (and max abs) per layer in execution order, log scale; the first divergent layer marked."""
    plt = pyplot()
    rows = [r for r in layers if r.get("status") in ("pass", "fail") and r.get("kind") != "output"]
    floor = 1e-12

    def series(key: str, source: str = "metrics") -> list[float]:
        out = []
        for r in rows:
            value = number((r.get(source) or {}).get(key)) if source == "metrics" else number(
                ((r.get("own") or {}).get("metrics") or {}).get(key))
            out.append(float("nan") if value is None else (max(value, floor) if math.isfinite(value) else 1e6))
        return out

    xs = list(range(len(rows)))
    figure, axis = plt.subplots(figsize=(11, 3.6))
    axis.plot(xs, series("rel_l2"), marker="o", markersize=3, linewidth=1.2, color="#4c72b0", label="rel L2 (total)")
    axis.plot(xs, series("max_abs"), marker=".", markersize=3, linewidth=0.8, color="#8c959f", label="max abs")
    own = series("rel_l2", "own")
    if any(not math.isnan(v) for v in own):
        axis.scatter(xs, own, s=14, color="#dd8452", zorder=3, label="rel L2 (own: new at this layer)")
    failing = [i for i, r in enumerate(rows) if r.get("status") == "fail"]
    if failing:
        axis.scatter(failing, [series("rel_l2")[i] for i in failing], s=28, facecolors="none", edgecolors="#cf222e",
                     zorder=4, label="beyond tolerance")
    if bound:
        axis.axhline(bound, color="#cf222e", linestyle=":", linewidth=1, label=f"rel L2 bound {bound:g}")
    labels = [str(r.get("label")) for r in rows]
    if first in labels:
        index = labels.index(first)
        axis.axvline(index, color="#cf222e", linewidth=1.4)
        axis.annotate(f"first divergent: {first}", xy=(index, 1), xycoords=("data", "axes fraction"),
                      xytext=(4, -12), textcoords="offset points", color="#cf222e", fontsize=8)
    axis.set_yscale("log")
    step = max(1, len(rows) // 40)
    ticks = sorted(set(range(0, len(rows), step)) | ({labels.index(first)} if first in labels else set()))
    axis.set_xticks(ticks)
    axis.set_xticklabels([labels[i] for i in ticks], rotation=70, ha="right", fontsize=6)
    axis.set_ylabel("error vs eager", fontsize=8)
    axis.tick_params(axis="y", labelsize=7)
    axis.grid(True, which="major", axis="y", alpha=0.3)
    axis.legend(fontsize=7, loc="lower right", ncol=2)
    axis.set_title("per-layer error, execution order", fontsize=9)
    return _png(figure)


# ----------------------------------------------------------------------------- html


def plots_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


NO_PLOTS = '<p class="meta">plots need matplotlib, which is not installed (pip install matplotlib)</p>'


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _img(data: str, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _verdict(data: Mapping[str, Any]) -> tuple[str, Any, str]:
    """Verdict, exit code and why the work is incomplete. A compare report's is recomputed from its rows,
    gate and completeness; a debug report's stored one stands unless the run did not finish."""
    from ..results import UNFINISHED, judge_dict

    if data.get("kind") == "debug":
        summary = data.get("summary") or {}
        if data.get("complete") is not True:
            return "INCOMPLETE", 3, UNFINISHED
        return str(summary.get("verdict", "?")), summary.get("exit_code", "?"), ""
    judged = judge_dict(data)
    return judged.verdict, int(judged.exit_code), judged.gap


def _header(data: Mapping[str, Any], title: str) -> list[str]:
    verdict, code, why = _verdict(data)
    inputs = ", ".join(f"{i.get('name')} {'x'.join(map(str, i.get('shape', [])))} {i.get('dtype')}"
                       for i in data.get("inputs", []))
    device = data.get("device") or {}
    judged_by = judge_text(data.get("analysis"))
    versions = data.get("versions") or {}
    where = ", ".join(str(d) for d in (device.get("cpu"), device.get("gpu")) if d)
    runtime = versions.get("onnxruntime") or versions.get("onnxruntime-gpu")
    libraries = (f"deployval {versions.get('deployval')}, torch {versions.get('torch')}, onnx {versions.get('onnx')}, "
                 f"onnxruntime {runtime}")
    return [
        f"<h1>{_e(title)}</h1>",
        f'<p><span class="verdict v-{_e(verdict)}">{_e(verdict)}</span> exit code {_e(code)}</p>',
        *([f'<p class="finding">incomplete: {_e(why)}</p>'] if why else []),
        f'<p class="meta">model <b>{_e((data.get("model") or {}).get("name"))}</b> — inputs {_e(inputs)}, '
        f'{_e(data.get("inputs_source"))}</p>',
        f'<p class="meta">device {_e(device.get("device"))} ({_e(where)}) — {_e(libraries)} — '
        f'{_e(data.get("created"))}</p>',
        f'<p class="meta"><code>{_e(data.get("command"))}</code></p>',
        *([f'<p class="meta">{_e(judged_by)}</p>'] if judged_by else []),
        *[f'<p class="meta">task {_e(r.get("backend"))}:{_e(r.get("precision"))}: '
          f'{_e(task_outcome_text(r["task_check"]))}</p>' for r in data.get("results", []) if r.get("task_check")],
    ]


def _compare_body(data: Mapping[str, Any], histograms: Mapping[str, Any]) -> list[str]:
    parts = ["<h2>Verdict</h2>", "<table><tr>"]
    columns = ("backend", "precision", "status", "output", "max abs", "mean abs", "rel L2", "cosine", "task",
               "median ms", "memory MB", "reason")
    parts.append("".join(f"<th>{c}</th>" for c in columns) + "</tr>")
    plots = []
    for result in data.get("results", []):
        status = result.get("status", "")
        latency = result.get("latency") or {}
        median = fmt(number(latency.get("median_ms"))) if latency else "-"
        memory = memory_text((result.get("details") or {}).get("memory"))
        star = "" if result.get("faithful", True) else "*"
        outputs = result.get("outputs") or [None]
        for index, output in enumerate(outputs):
            m = (output or {}).get("metrics", {})
            task = (output or {}).get("task") or {}
            task_text = ", ".join(f"{k} {fmt(number(v))}" for k, v in task.items() if not isinstance(v, dict))
            row_class = "fail" if output is not None and not output.get("passed") and status == "fail" else ""
            cells = [
                _e(result.get("backend")) if index == 0 else "", _e(result.get("precision")) if index == 0 else "",
                f'<span class="s-{_e(status)}">{_e(status.upper())}{star}</span>' if index == 0 else "",
                _e((output or {}).get("name", "-")),
            ]
            numbers = [fmt(number(m.get(k))) for k in ("max_abs", "mean_abs", "rel_l2")]
            cosine = number(m.get("cosine"))
            numbers.append("-" if cosine is None else f"{cosine:.6f}")
            parts.append(f'<tr class="{row_class}">' + "".join(f"<td>{c}</td>" for c in cells)
                         + "".join(f'<td class="num">{_e(n)}</td>' for n in numbers)
                         + f"<td>{_e(task_text or '-')}</td><td class=\"num\">{_e(median if index == 0 else '')}</td>"
                         + f"<td class=\"num\">{_e(memory if index == 0 else '')}</td>"
                         + f"<td>{_e(result.get('reason', '') if index == 0 else '')}</td></tr>")
            if output is None:
                continue
            key = f"{result.get('backend')}:{result.get('precision')}:{output.get('name')}"
            hist = _as_histogram(histograms.get(key)) or _as_histogram(
                ((result.get("details") or {}).get("error_histograms") or {}).get(output.get("name")))
            if hist is not None and plots_available():
                atol = number((output.get("tolerance") or {}).get("atol"))
                plots.append((key, histogram_png(hist, key, atol)))
            elif hist is not None:
                plots.append((key, ""))
    parts.append("</table>")
    warnings = [w for r in data.get("results", []) for w in r.get("warnings", [])] + list(data.get("warnings", []))
    if warnings:
        parts.append("<ul>" + "".join(f"<li>{_e(w)}</li>" for w in dict.fromkeys(warnings)) + "</ul>")
    parts += _fp16_weights(data)
    parts += _slices(data)
    parts.append("<h2>Error distribution per output</h2>")
    if plots and not plots_available():
        parts.append(NO_PLOTS)
    elif plots:
        parts.append('<div class="plots">' + "".join(
            f"<figure>{_img(png, 'histogram ' + key)}<figcaption>{_e(key)}</figcaption></figure>" for key, png in plots)
            + "</div>")
    else:
        parts.append('<p class="meta">no histograms were recorded for this report</p>')
    return parts


def _slices(data: Mapping[str, Any]) -> list[str]:
    """Per row and sliced output (--slices), every slice's error and verdict: the worst one gates."""
    rows = [(f"{r.get('backend')}:{r.get('precision')}", o.get("name"), s) for r in data.get("results", [])
            if r.get("status") != "reference" for o in r.get("outputs") or [] for s in o.get("slices") or []]
    if not rows:
        return []
    parts = ["<h2>Errors per slice</h2>", "<table><tr>" + "".join(f"<th>{c}</th>" for c in (
        "row", "output", "slice", "max abs", "mean abs", "rel L2", "cosine", "verdict")) + "</tr>"]
    for label, output, item in rows:
        m = item.get("metrics") or {}
        numbers = [fmt(number(m.get(k))) for k in ("max_abs", "mean_abs", "rel_l2")]
        cosine = number(m.get("cosine"))
        numbers.append("-" if cosine is None else f"{cosine:.6f}")
        verdict = "pass" if item.get("passed") else "; ".join(item.get("failures") or ["fail"])
        parts.append(f'<tr class="{"" if item.get("passed") else "fail"}">'
                     + "".join(f"<td>{_e(c)}</td>" for c in (label, output, item.get("slice")))
                     + "".join(f'<td class="num">{_e(n)}</td>' for n in numbers) + f"<td>{_e(verdict)}</td></tr>")
    parts.append("</table>")
    return parts


def _fp16_weights(data: Mapping[str, Any]) -> list[str]:
    """Per fp16 row, the weights its fp16 cannot hold and the --keep-fp32 value that keeps each fp32."""
    rows = [(f"{r.get('backend')}:{r.get('precision')}", f) for r in data.get("results", [])
            for f in (r.get("details") or {}).get("fp16_weights") or []]
    if not rows:
        return []
    parts = ["<h2>fp16 weight ranges</h2>", "<table><tr>" + "".join(f"<th>{c}</th>" for c in (
        "row", "module", "node", "tensor", "kind", "max |w|", "values", "--keep-fp32")) + "</tr>"]
    for label, f in rows:
        nodes = list(f.get("nodes") or [])
        values = (f"{f.get('count')} of {f.get('elements')}" if f.get("kind") == "overflow"
                  else f"{f.get('count')} of {f.get('nonzero')} non-zero")
        cells = [label, f.get("module") or "-", ", ".join(nodes[:3]) + ("…" if len(nodes) > 3 else "") or "-",
                 f.get("tensor"), f.get("kind"), fmt(number(f.get("max_abs"))), values,
                 " ".join(f.get("keep_fp32") or []) or "none"]
        parts.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    return parts


def _debug_body(data: Mapping[str, Any]) -> list[str]:
    layers = data.get("layers", [])
    first = data.get("first_divergent")
    parts = [f'<p class="meta">backend <b>{_e(data.get("backend"))}:{_e(data.get("precision"))}</b> on artifact '
             f'{_e((data.get("artifact") or {}).get("kind"))} — exporter {_e(data.get("exporter"))} — layer map from '
             f'{_e(data.get("map_source"))} — {_e((data.get("memory") or {}).get("mode"))}</p>']
    if first is None:
        parts.append('<div class="ok">No layer exceeds its tolerance.</div>')
    else:
        localized = data.get("localized") or {}
        triage = data.get("triage") or {}
        row = next((r for r in layers if r.get("label") == first), {})
        parts.append('<div class="finding">'
                     f"<p><b>First divergent layer:</b> <code>{_e(first)}</code> ({_e(row.get('type'))}): "
                     f"{_e('; '.join(row.get('failures', [])[:2]))}</p>"
                     + (f"<p><b>The error is new in:</b> <code>{_e(localized.get('label'))}</code> — "
                        f"{_e(localized.get('explanation'))}</p>" if localized else "")
                     + (f"<p><b>Triage: {_e(triage.get('verdict'))}</b> — {_e(triage.get('explanation'))}</p>"
                        if triage else "")
                     + "</div>")
    bound = None
    for row in layers:
        bound = number((row.get("tolerance") or {}).get("rel_l2"))
        if bound:
            break
    compared = [r for r in layers if r.get("status") in ("pass", "fail") and r.get("kind") != "output"]
    parts.append("<h2>Per-layer error</h2>")
    if compared and plots_available():
        parts.append(_img(layer_curve_png(layers, first, bound), "per-layer error curve"))
    elif compared:
        parts.append(NO_PLOTS)
    parts.append(f'<p class="meta">{_e(data.get("new_vs_inherited"))}</p>')
    parts.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in (
        "#", "layer", "type", "ops", "ONNX tensor", "max abs", "mean abs", "rel L2", "cosine", "new", "status",
        "note")) + "</tr>")
    for row in layers:
        m = row.get("metrics") or {}
        status = row.get("status", "")
        css = "first" if row.get("label") == first else ("fail" if status == "fail" else (
            "muted" if status not in ("pass", "fail") else ""))
        share = number(row.get("new_share"))
        cosine = number(m.get("cosine"))
        own = row.get("own") or {}
        note = row.get("reason") or own.get("unavailable") or ""
        ops = row.get("own_ops") or row.get("ops") or []
        cells = [str(row.get("index")), row.get("label"), row.get("type"), ",".join(ops[:4]) + ("…" if len(ops) > 4
                                                                                               else ""),
                 row.get("tensor") or "-"]
        numbers = [fmt(number(m.get("max_abs"))), fmt(number(m.get("mean_abs"))), fmt(number(m.get("rel_l2"))),
                   "-" if cosine is None else f"{cosine:.6f}", "-" if share is None else f"{share:.0%}"]
        parts.append(f'<tr class="{css}">' + "".join(f"<td>{_e(c)}</td>" for c in cells)
                     + "".join(f'<td class="num">{_e(n)}</td>' for n in numbers)
                     + f'<td class="s-{_e(status)}">{_e(status)}</td><td>{_e(note)}</td></tr>')
    parts.append("</table>")
    plots = []
    for row in layers:
        if row.get("kind") == "output" and row.get("histogram") and plots_available():
            atol = number((row.get("tolerance") or {}).get("atol"))
            key = f"{data.get('backend')}:{data.get('precision')}:{row.get('label')}"
            plots.append((key, histogram_png(row["histogram"], key, atol)))
    if plots:
        parts.append("<h2>Error distribution per output</h2>")
        parts.append('<div class="plots">' + "".join(
            f"<figure>{_img(png, 'histogram ' + key)}<figcaption>{_e(key)}</figcaption></figure>" for key, png in plots)
            + "</div>")
    for note in data.get("notes", []) + data.get("warnings", []):
        parts.append(f'<p class="meta">{_e(note)}</p>')
    return parts


def render_html(report: Any, histograms: Mapping[str, Any] | None = None) -> str:
    """The report (a compare `Report`, a `DebugReport`, or either's `to_dict()`) as one HTML page."""
    data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    is_debug = data.get("kind") == "debug"
    model = (data.get("model") or {}).get("name", "?")
    title = (f"deployval debug — {model} on {data.get('backend')}:{data.get('precision')}" if is_debug
             else f"deployval compare — {model}")
    body = _header(data, title) + (_debug_body(data) if is_debug else _compare_body(data, histograms or {}))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def write_html(report: Any, path: Path, histograms: Mapping[str, Any] | None = None) -> None:
    """Write the self-contained HTML report atomically (temp file, then rename)."""
    atomic_write_text(Path(path), render_html(report, histograms))
