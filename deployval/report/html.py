"""The HTML report: one self-contained file (inline CSS, plots as base64 PNG from matplotlib's Agg
backend, no script, nothing fetched) for a `compare` report or a `debug` report.

* compare: the verdict table (backend x precision x output, with each output's tolerance and the
  minimum passing one; under each row a line of its own notes: its reason, warnings and reproduction
  command) and, per output, a histogram of |candidate - reference| on log-spaced bins (a
  bit-identical output gets a line instead). The histograms are not in the JSON report; pass them
  as `histograms={"ort:fp16:logits": error_histogram(ref, cand), ...}` or put
  `result.details["error_histograms"][output] = error_histogram(ref, cand)` in each result
  (`deployval.judge.stats.error_histogram`; the pipeline fills the latter).
* debug: the first divergent layer, where the error is new and the triage verdict, a per-layer error
  curve (log scale) with the first divergent layer marked, the per-layer table, and the
  histograms of the final outputs.

Rendered from the JSON form (`to_dict()`), so a saved JSON report renders the same. Text wraps, so
the page fits a laptop screen however long a reason or a path is. matplotlib is imported only in
html_plots.py, and only when there is something to plot; without it the page keeps its tables and
findings and says that the plots need matplotlib.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._util import atomic_write_text
from ..metric_table import LOWER_BOUNDS, UPPER_BOUNDS
from .formatting import fmt, judge_text, mean_column, memory_text, number, status_text, task_outcome_text
from .html_plots import histogram_has_bars, histogram_png, layer_curve_png, plots_available, pyplot

__all__ = ["histogram_png", "layer_curve_png", "plots_available", "pyplot", "render_html", "write_html"]

# Text cells wrap (long ERROR reasons, paths, commands) and break inside a long token rather than run
# off the page; only numbers and short labels stay on one line. A table that is still too wide
# scrolls inside its own box, never the page.
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2330;max-width:1400px}
h1{font-size:1.4em;margin:0 0 4px} h2{font-size:1.15em;margin:28px 0 8px}
p,li,div{overflow-wrap:anywhere}
.meta{color:#5b6475;font-size:.9em;margin:2px 0}
.verdict{display:inline-block;padding:4px 12px;border-radius:4px;font-weight:600;color:#fff}
.v-PASS{background:#1a7f37}.v-FAIL{background:#cf222e}.v-ERROR,.v-INCOMPLETE{background:#9a6700}
.wide{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;font-size:.86em;margin:8px 0}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th,td.num,td.key{white-space:nowrap}
th{background:#f3f4f6} td.num{text-align:right;font-variant-numeric:tabular-nums}
td.tol{min-width:9em;max-width:22em} .nb{white-space:nowrap}
tr.fail td{background:#ffebe9} tr.first td{background:#ffd7d5;font-weight:600} tr.muted td{color:#8c959f}
tr.note td{background:#f8f9fa;font-size:.95em;color:#3d4452;border-top:none}
tr.note div{margin:1px 0 1px 12px} tr.note code{font-size:.95em}
tr.result td{border-top:2px solid #afb8c1} td.key a{color:inherit}
.s-pass,.s-reference{color:#1a7f37}.s-fail{color:#cf222e;font-weight:600}.s-error{color:#9a6700;font-weight:600}
.s-skipped,.s-unmapped,.s-vanished{color:#8c959f}
.finding{border-left:4px solid #cf222e;padding:6px 12px;background:#fff8f7;margin:8px 0}
.ok{border-left:4px solid #1a7f37;padding:6px 12px;background:#f4fbf6;margin:8px 0}
.plots{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0} figcaption{font-size:.8em;color:#5b6475}
img{max-width:100%;height:auto}
code{background:#f3f4f6;padding:1px 4px;border-radius:3px;overflow-wrap:anywhere}
"""

NO_PLOTS = '<p class="meta">plots need matplotlib, which is not installed (pip install matplotlib)</p>'


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


# *word* in the reports' prose (written for the console and Markdown): emphasis here, not literal
# asterisks. A '*' inside a formula such as 'atol+rtol*|ref|' has a word character before it and stays.
_EMPHASIS = re.compile(r"(?<![\w*])\*(?=[^\s*])([^*]+?)(?<=[^\s*])\*(?![\w*])")


def _prose(value: Any) -> str:
    """Escaped text with its *emphasis* as <em>."""
    return _EMPHASIS.sub(r"<em>\1</em>", _e(value))


def _img(data: str, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _wide(table: list[str]) -> list[str]:
    """A table in a box that scrolls by itself if it cannot be narrowed to the page."""
    return ['<div class="wide">', *table, "</div>"]


def cosine_text(value: Any) -> str:
    """A cosine close to 1 as '1 − 4.24e-07': six decimals would round it to 1.000000, which reads as
    'identical'. Only an exact 1 shows as '1'."""
    cosine = number(value)
    if cosine is None or not math.isfinite(cosine):
        return fmt(cosine)
    if cosine == 1.0:
        return "1"
    gap = 1.0 - cosine
    if abs(gap) < 1e-4:
        return f"1 − {gap:.2e}" if gap > 0 else f"1 + {-gap:.2e}"
    return f"{cosine:.6f}"


def cosine_cell(metrics: Mapping[str, Any]) -> str:
    """A table's cosine: exactly 1 where every element is equal (max abs 0), whatever the float sum
    made of it (1 + 2.2e-16 is rounding in the metric, not a difference); else `cosine_text`."""
    cosine = number(metrics.get("cosine"))
    if cosine is not None and math.isfinite(cosine) and number(metrics.get("max_abs")) == 0.0:
        return "1"
    return cosine_text(cosine)


def tolerance_text(output: Mapping[str, Any]) -> str:
    """The bounds an output was judged by, worded as on the console."""
    from dataclasses import fields

    from ..model.spec import Tolerance

    bounds = output.get("tolerance") or {}
    if "mismatch" in (output.get("metrics") or {}):  # labels and indices: the share that differs
        return f"mismatch<={fmt(number(bounds.get('mismatch')) or 0.0)}"
    names = {f.name for f in fields(Tolerance)}
    return Tolerance(**{k: number(v) for k, v in bounds.items() if k in names}).describe()


def min_passing_text(output: Mapping[str, Any]) -> str:
    """The loosest bound each of the output's tolerances could have been tightened to and still pass
    (`min_passing_tolerance`, what the console prints as 'would pass at'): only the bounds that judged it."""
    values = {k: number(v) for k, v in (output.get("min_passing_tolerance") or {}).items()}
    if not values:
        return "no tolerance (non-finite values)"
    bounds = output.get("tolerance") or {}
    parts = []
    if "atol" in values and ("atol" in bounds or "rtol" in bounds):
        parts.append(f"atol={fmt(values['atol'])} at rtol={fmt(values.get('at_rtol') or 0.0)}, "
                     f"or rtol={fmt(values.get('rtol'))} at atol={fmt(values.get('at_atol') or 0.0)}")
    for key in (m.name for m in UPPER_BOUNDS):
        if key in values and (key in bounds or key == "mismatch"):
            parts.append(f"{key}<={fmt(values[key])}")
    for key in (m.name for m in LOWER_BOUNDS):
        if key in values and key in bounds:
            parts.append(f"{key}>={cosine_text(values[key])}")
    if not parts:  # judged by bounds it has no minimum for (a task metric): show what there is
        parts = [f"{k}={fmt(v)}" for k, v in values.items() if not k.startswith("at_")]
    return ", ".join(parts)


# ----------------------------------------------------------------------------- histograms


def _as_histogram(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return dict(value)
    import numpy as np

    from ..judge.stats import error_histogram

    diff = np.abs(np.asarray(value, dtype=np.float64))  # raw |c - r|
    return error_histogram(np.zeros_like(diff), diff)


def _verdict(data: Mapping[str, Any]) -> tuple[str, Any, str]:
    """Verdict, exit code and why the work is incomplete. A compare report's is recomputed from its rows,
    gate and completeness; a debug report's stored one stands unless the run did not finish."""
    from ..judge.results import UNFINISHED, judge_dict

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


COMPARE_COLUMNS = ("backend", "precision", "status", "output", "max abs", "mean abs", "rel L2", "cosine", "task",
                   "median ms", "memory MB", "tolerance", "min passing tolerance")


def _row_id(result: Mapping[str, Any]) -> str:
    return "row-" + re.sub(r"[^A-Za-z0-9_-]", "-", f"{result.get('backend')}-{result.get('precision')}")


def _row_notes(result: Mapping[str, Any]) -> list[str]:
    """What the console prints under its table, for one row, each line naming the row: why it failed,
    errored or was skipped, its warnings (the '*' of a row not faithful to its precision), and the
    command that reruns it alone."""
    label = f"{result.get('backend')}:{result.get('precision')}"
    status = str(result.get("status", ""))
    star = "* " if not result.get("faithful", True) else ""
    lines = []
    if result.get("reason") and status != "pass":
        lines.append(f'<b>{_e(label)}</b> <span class="s-{_e(status)}">{_e(status)}</span>: {_e(result["reason"])}')
    lines += [f"<b>{_e(label)}</b> {_e(star)}{_prose(w)}" for w in result.get("warnings") or []]
    if result.get("reproduce") and status not in ("reference", "skipped"):
        lines.append(f"reproduce <b>{_e(label)}</b>: <code>{_e(result['reproduce'])}</code>")
    return lines


def _output_cells(output: Mapping[str, Any] | None, status: str) -> tuple[list[str], list[str], str]:
    """An output's number cells, tolerance cells and task text ('-' where the row compared nothing)."""
    if output is None:
        return ["-"] * 4, ["-", "-"], "-"
    m = output.get("metrics") or {}
    numbers = [fmt(number(m.get("max_abs"))), mean_column(m), fmt(number(m.get("rel_l2"))), cosine_cell(m)]
    task = output.get("task") or {}
    task_text = ", ".join(f"{k} {fmt(number(v))}" for k, v in task.items() if not isinstance(v, dict)) or "-"
    judged = status not in ("reference", "skipped") and (output.get("tolerance") or "mismatch" in m)
    bounds = [tolerance_text(output), min_passing_text(output)] if judged else ["-", "-"]
    return numbers, bounds, task_text


def _bounds_html(text: str) -> str:
    """Tolerance text that wraps between bounds, never inside one ('1.00e-' / '03' at the hyphen)."""
    return " ".join(f'<span class="nb">{_e(word)}</span>' if "=" in word else _e(word) for word in text.split(" "))


def _compare_table(data: Mapping[str, Any]) -> list[str]:
    """The verdict table: a line per output, then a full-width line of the row's own notes."""
    parts = ["<table><tr>" + "".join(f"<th>{c}</th>" for c in COMPARE_COLUMNS) + "</tr>"]
    for result in data.get("results", []):
        status = str(result.get("status", ""))
        latency = result.get("latency") or {}
        median = fmt(number(latency.get("median_ms"))) if latency else "-"
        memory = memory_text((result.get("details") or {}).get("memory"))
        notes = _row_notes(result)
        text = _e(status_text(status, bool(result.get("faithful", True))))
        if text.endswith("*") and notes:  # links to the row's note that explains the star
            text = f'<a href="#{_row_id(result)}">{text}</a>'
        outputs = result.get("outputs") or [None]
        for index, output in enumerate(outputs):
            first = index == 0
            numbers, bounds, task_text = _output_cells(output, status)
            failed = output is not None and not output.get("passed") and status == "fail"
            css = " ".join(c for c in ("result" if first else "", "fail" if failed else "") if c)
            keys = [_e(result.get("backend")) if first else "", _e(result.get("precision")) if first else "",
                    f'<span class="s-{_e(status)}">{text}</span>' if first else "",
                    _e((output or {}).get("name", "-"))]
            cosine = number(((output or {}).get("metrics") or {}).get("cosine"))
            full = "" if cosine is None else f' title="cosine {cosine!r}"'  # every digit, on hover
            cells = ("".join(f'<td class="key">{c}</td>' for c in keys)
                     + "".join(f'<td class="num">{_e(n)}</td>' for n in numbers[:3])
                     + f'<td class="num"{full}>{_e(numbers[3])}</td><td>{_e(task_text)}</td>'
                     + f'<td class="num">{_e(median if first else "")}</td><td class="num">'
                     + f"{_e(memory if first else '')}</td>"
                     + "".join(f'<td class="tol">{_bounds_html(b)}</td>' for b in bounds))
            parts.append(f'<tr class="{css}">{cells}</tr>')
        if notes:
            parts.append(f'<tr class="note" id="{_row_id(result)}"><td colspan="{len(COMPARE_COLUMNS)}">'
                         + "".join(f"<div>{line}</div>" for line in notes) + "</td></tr>")
    parts.append("</table>")
    return _wide(parts)


def _bit_identical(output: Mapping[str, Any], hist: Mapping[str, Any]) -> bool:
    """Every compared element equal to the reference's (non-finite ones in the same places)."""
    metrics = output.get("metrics") or {}
    max_abs = number(metrics.get("max_abs"))
    return max_abs == 0.0 and not hist.get("nonfinite") and not histogram_has_bars(hist)


def _compare_body(data: Mapping[str, Any], histograms: Mapping[str, Any]) -> list[str]:
    parts = ["<h2>Verdict</h2>", *_compare_table(data)]
    plots: list[tuple[str, str]] = []
    plain: list[str] = []  # outputs with nothing to plot, in words
    for result in data.get("results", []):
        for output in result.get("outputs") or []:
            key = f"{result.get('backend')}:{result.get('precision')}:{output.get('name')}"
            hist = _as_histogram(histograms.get(key)) or _as_histogram(
                ((result.get("details") or {}).get("error_histograms") or {}).get(output.get("name")))
            if hist is None:
                continue
            if _bit_identical(output, hist):
                plain.append(f"<b>{_e(key)}</b>: bit-identical to the reference (every |candidate − reference| "
                             "is 0), nothing to plot")
            elif not histogram_has_bars(hist) and not hist.get("nonfinite"):
                low = number(hist.get("log10_low"))
                plain.append(f"<b>{_e(key)}</b>: every |candidate − reference| is below "
                             f"1e{-12 if low is None else int(low)}, nothing to plot")
            elif plots_available():
                atol = number((output.get("tolerance") or {}).get("atol"))
                plots.append((key, histogram_png(hist, key, atol)))
            else:
                plots.append((key, ""))
    warnings = list(data.get("warnings", []))  # the rows' own warnings are in their notes
    if warnings:
        parts.append("<ul>" + "".join(f"<li>{_prose(w)}</li>" for w in dict.fromkeys(warnings)) + "</ul>")
    parts += _fp16_weights(data)
    parts += _slices(data)
    parts.append("<h2>Error distribution per output</h2>")
    parts += [f'<p class="meta">{line}</p>' for line in plain]
    if plots and not plots_available():
        parts.append(NO_PLOTS)
    elif plots:
        parts.append('<div class="plots">' + "".join(
            f"<figure>{_img(png, 'histogram ' + key)}<figcaption>{_e(key)}</figcaption></figure>" for key, png in plots)
            + "</div>")
    elif not plain:
        parts.append('<p class="meta">no histograms were recorded for this report</p>')
    return parts


def _slices(data: Mapping[str, Any]) -> list[str]:
    """Per row and sliced output (--slices), every slice's error and verdict: the worst one gates."""
    rows = [(f"{r.get('backend')}:{r.get('precision')}", o.get("name"), s) for r in data.get("results", [])
            if r.get("status") != "reference" for o in r.get("outputs") or [] for s in o.get("slices") or []]
    if not rows:
        return []
    parts = ["<table><tr>" + "".join(f"<th>{c}</th>" for c in (
        "row", "output", "slice", "max abs", "mean abs", "rel L2", "cosine", "verdict")) + "</tr>"]
    for label, output, item in rows:
        m = item.get("metrics") or {}
        numbers = [fmt(number(m.get(k))) for k in ("max_abs", "mean_abs", "rel_l2")] + [cosine_cell(m)]
        verdict = "pass" if item.get("passed") else "; ".join(item.get("failures") or ["fail"])
        parts.append(f'<tr class="{"" if item.get("passed") else "fail"}">'
                     + "".join(f"<td>{_e(c)}</td>" for c in (label, output, item.get("slice")))
                     + "".join(f'<td class="num">{_e(n)}</td>' for n in numbers) + f"<td>{_e(verdict)}</td></tr>")
    parts.append("</table>")
    return ["<h2>Errors per slice</h2>", *_wide(parts)]


def _fp16_weights(data: Mapping[str, Any]) -> list[str]:
    """Per fp16 row, the weights its fp16 cannot hold and the --keep-fp32 value that keeps each fp32."""
    rows = [(f"{r.get('backend')}:{r.get('precision')}", f) for r in data.get("results", [])
            for f in (r.get("details") or {}).get("fp16_weights") or []]
    if not rows:
        return []
    parts = ["<table><tr>" + "".join(f"<th>{c}</th>" for c in (
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
    return ["<h2>fp16 weight ranges</h2>", *_wide(parts)]


def _debug_finding(data: Mapping[str, Any]) -> list[str]:
    """The first divergent layer, where its error is new and the triage verdict, or that none diverges."""
    layers = data.get("layers", [])
    first = data.get("first_divergent")
    if first is None:
        return ['<div class="ok">No layer exceeds its tolerance.</div>']
    localized = data.get("localized") or {}
    triage = data.get("triage") or {}
    row = next((r for r in layers if r.get("label") == first), {})
    return ['<div class="finding">'
            f"<p><b>First divergent layer:</b> <code>{_e(first)}</code> ({_e(row.get('type'))}): "
            f"{_e('; '.join(row.get('failures', [])[:2]))}</p>"
            + (f"<p><b>The error is new in:</b> <code>{_e(localized.get('label'))}</code> — "
               f"{_prose(localized.get('explanation'))}</p>" if localized else "")
            + (f"<p><b>Triage: {_e(triage.get('verdict'))}</b> — {_prose(triage.get('explanation'))}</p>"
               if triage else "")
            + "</div>"]


def _debug_table(layers: list[Mapping[str, Any]], first: str | None) -> list[str]:
    """One line per layer in execution order; names, tensors and notes wrap."""
    parts = ["<table><tr>" + "".join(f"<th>{c}</th>" for c in (
        "#", "layer", "type", "ops", "ONNX tensor", "max abs", "mean abs", "rel L2", "cosine", "new", "status",
        "note")) + "</tr>"]
    for row in layers:
        m = row.get("metrics") or {}
        status = row.get("status", "")
        css = "first" if row.get("label") == first else ("fail" if status == "fail" else (
            "muted" if status not in ("pass", "fail") else ""))
        share = number(row.get("new_share"))
        own = row.get("own") or {}
        note = row.get("reason") or own.get("unavailable") or ""
        ops = row.get("own_ops") or row.get("ops") or []
        cells = [str(row.get("index")), row.get("label"), row.get("type"),
                 ",".join(ops[:4]) + ("…" if len(ops) > 4 else ""), row.get("tensor") or "-"]
        numbers = [fmt(number(m.get("max_abs"))), fmt(number(m.get("mean_abs"))), fmt(number(m.get("rel_l2"))),
                   cosine_cell(m), "-" if share is None else f"{share:.0%}"]
        parts.append(f'<tr class="{css}">' + "".join(f"<td>{_e(c)}</td>" for c in cells)
                     + "".join(f'<td class="num">{_e(n)}</td>' for n in numbers)
                     + f'<td class="s-{_e(status)}">{_e(status)}</td><td>{_prose(note)}</td></tr>')
    parts.append("</table>")
    return _wide(parts)


def _debug_tail(data: Mapping[str, Any]) -> list[str]:
    """The --repro and model-explorer outcomes, notes and warnings, as the console prints them."""
    parts = []
    repro = data.get("repro")
    if repro:
        if repro.get("written"):
            nodes = f"{repro.get('nodes')} node{'s' if repro.get('nodes') != 1 else ''}"
            parts.append(f'<p class="meta"><b>repro:</b> {_e(repro.get("directory"))} ({_e(repro.get("layer"))}, '
                         f'{_e(nodes)}): <code>{_e(repro.get("command"))}</code></p>')
        else:
            parts.append(f'<p class="meta"><b>repro:</b> {_prose(repro.get("reason"))}</p>')
    explorer = data.get("model_explorer")
    if explorer:
        parts.append(f'<p class="meta"><b>model explorer:</b> '
                     f'{_e(explorer.get("open") or explorer.get("reason"))}</p>')
    parts += [f'<p class="meta">note: {_prose(n)}</p>' for n in data.get("notes", [])]
    parts += [f'<p class="meta">warning: {_prose(w)}</p>' for w in data.get("warnings", [])]
    return parts


def _debug_body(data: Mapping[str, Any]) -> list[str]:
    layers = data.get("layers", [])
    first = data.get("first_divergent")
    parts = [f'<p class="meta">backend <b>{_e(data.get("backend"))}:{_e(data.get("precision"))}</b> on artifact '
             f'{_e((data.get("artifact") or {}).get("kind"))} — exporter {_e(data.get("exporter"))} — layer map from '
             f'{_e(data.get("map_source"))} — {_e((data.get("memory") or {}).get("mode"))}</p>',
             *_debug_finding(data)]
    bound = next((b for b in (number((r.get("tolerance") or {}).get("rel_l2")) for r in layers) if b), None)
    compared = [r for r in layers if r.get("status") in ("pass", "fail") and r.get("kind") != "output"]
    parts.append("<h2>Per-layer error</h2>")
    if compared and plots_available():
        parts.append(_img(layer_curve_png(layers, first, bound), "per-layer error curve"))
    elif compared:
        parts.append(NO_PLOTS)
    parts.append(f'<p class="meta">{_prose(data.get("new_vs_inherited"))}</p>')
    parts += _debug_table(layers, first)
    plots, plain = [], []
    for row in layers:
        hist = row.get("histogram")
        if row.get("kind") != "output" or not hist:
            continue
        key = f"{data.get('backend')}:{data.get('precision')}:{row.get('label')}"
        if _bit_identical(row, hist):
            plain.append(f'<p class="meta"><b>{_e(key)}</b>: bit-identical to the reference, nothing to plot</p>')
        elif histogram_has_bars(hist) and plots_available():
            plots.append((key, histogram_png(hist, key, number((row.get("tolerance") or {}).get("atol")))))
    if plots or plain:
        parts.append("<h2>Error distribution per output</h2>")
        parts += plain
    if plots:
        parts.append('<div class="plots">' + "".join(
            f"<figure>{_img(png, 'histogram ' + key)}<figcaption>{_e(key)}</figcaption></figure>" for key, png in plots)
            + "</div>")
    return parts + _debug_tail(data)


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
