"""The HTML report's plots: base64 PNGs from matplotlib's Agg backend. Kept apart from html.py so the
page builder stays readable; matplotlib is imported only when a plot is drawn."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping
from typing import Any

from .formatting import number


def plots_available() -> bool:
    """Whether matplotlib is importable: without it the page keeps its tables and says why it has no plots."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed; also used by precision/sweep.py)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def png(figure: Any) -> str:
    """The figure as base64 PNG, closed afterwards (a long debug run draws many)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    pyplot().close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def histogram_has_bars(hist: Mapping[str, Any]) -> bool:
    """Whether any |difference| lands in a bin: without one the plot would be an empty 0-1 frame."""
    return any(hist.get("counts") or [])


def histogram_png(hist: Mapping[str, Any], title: str, atol: float | None = None) -> str:
    """|candidate - reference| counts on log-spaced bins; the atol as a dashed line."""
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
    return png(figure)


def layer_curve_figure(layers: list[Mapping[str, Any]], first: str | None, bound: float | None) -> Any:
    """rel L2 (and max abs) per layer in execution order, log scale, the first divergent layer marked.
    Its label sits above the plotting area and the legend to its right, so neither covers a data point."""
    plt = pyplot()
    rows = [r for r in layers if r.get("status") in ("pass", "fail") and r.get("kind") != "output"]
    floor = 1e-12

    def series(key: str, source: str = "metrics") -> list[float]:
        out = []
        for r in rows:
            metrics = (r.get("metrics") or {}) if source == "metrics" else ((r.get("own") or {}).get("metrics") or {})
            value = number(metrics.get(key))
            out.append(float("nan") if value is None else (max(value, floor) if math.isfinite(value) else 1e6))
        return out

    xs = list(range(len(rows)))
    total = series("rel_l2")
    figure, axis = plt.subplots(figsize=(11.5, 3.8))
    axis.plot(xs, total, marker="o", markersize=3, linewidth=1.2, color="#4c72b0", label="rel L2 (total)")
    axis.plot(xs, series("max_abs"), marker=".", markersize=3, linewidth=0.8, color="#8c959f", label="max abs")
    own = series("rel_l2", "own")
    if any(not math.isnan(v) for v in own):
        axis.scatter(xs, own, s=14, color="#dd8452", zorder=3, label="rel L2 (own: new at this layer)")
    failing = [i for i, r in enumerate(rows) if r.get("status") == "fail"]
    if failing:
        axis.scatter(failing, [total[i] for i in failing], s=28, facecolors="none", edgecolors="#cf222e",
                     zorder=4, label="beyond tolerance")
    if bound:
        axis.axhline(bound, color="#cf222e", linestyle=":", linewidth=1, label=f"rel L2 bound {bound:g}")
    labels = [str(r.get("label")) for r in rows]
    index = labels.index(first) if first in labels else None
    if index is not None:
        axis.axvline(index, color="#cf222e", linewidth=1.4, label="first divergent layer")
        # above the axes (no data there), on a white box, pointing down at the marked line
        right_half = len(rows) > 1 and index > (len(rows) - 1) * 0.6
        axis.annotate(f"first divergent: {first}", xy=(index, 1), xycoords=("data", "axes fraction"),
                      xytext=(0, 6), textcoords="offset points", ha="right" if right_half else "left",
                      va="bottom", color="#cf222e", fontsize=8, annotation_clip=False,
                      bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "#cf222e",
                            "linewidth": 0.6},
                      arrowprops={"arrowstyle": "-", "color": "#cf222e", "linewidth": 0.8})
    axis.set_yscale("log")
    step = max(1, len(rows) // 40)
    ticks = sorted(set(range(0, len(rows), step)) | ({index} if index is not None else set()))
    axis.set_xticks(ticks)
    axis.set_xticklabels([labels[i] for i in ticks], rotation=70, ha="right", fontsize=6)
    axis.set_ylabel("error vs eager", fontsize=8)
    axis.tick_params(axis="y", labelsize=7)
    axis.grid(True, which="major", axis="y", alpha=0.3)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    axis.set_title("per-layer error, execution order", fontsize=9, loc="left", pad=22)
    return figure


def layer_curve_png(layers: list[Mapping[str, Any]], first: str | None, bound: float | None) -> str:
    """The per-layer error curve (`layer_curve_figure`) as base64 PNG."""
    return png(layer_curve_figure(layers, first, bound))
