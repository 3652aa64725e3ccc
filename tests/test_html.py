"""The HTML report: self-contained (inline CSS, base64 PNG plots, nothing fetched), for compare and
debug reports; rendered by headless Chromium where it is installed."""

from __future__ import annotations

import base64
import html
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from deployval.backends.base import ONNX, Runner, _registered, register_backend
from deployval.judge.stats import error_histogram
from deployval.report.formatting import fmt
from deployval.report.html import cosine_text, render_html, write_html

PNG = b"\x89PNG\r\n\x1a\n"


needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="matplotlib is not installed: the HTML report has no plots")


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


@pytest.fixture(scope="module")
def compare_report():
    import deployval

    return deployval.compare("convs", backends=["torch", "ort"], precisions=["fp32", "fp16"],
                             time_budget_s=0.05)


@pytest.fixture(scope="module")
def debug_report():
    from deployval.catalog.registry import resolve_model
    from deployval.debug.run import run_debug
    from deployval.model.arguments import parse_input_shape
    from deployval.model.spec import RunConfig

    spec = resolve_model("debug_models:conv_stack", input_shapes=[parse_input_shape("x=1x3x16x16")])
    return run_debug(spec, "ort", "fp32", RunConfig())


def test_error_histogram_counts_every_element():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(10_000).astype(np.float32)
    cand = ref + rng.standard_normal(ref.size).astype(np.float32) * 1e-3
    cand[:10] = ref[:10]  # exact: counted below the first bin
    hist = error_histogram(ref, cand)
    assert hist["below"] >= 10 and hist["below"] + sum(hist["counts"]) == ref.size
    assert json.loads(json.dumps(hist)) == hist  # small and JSON-able, to keep in a report


@needs_matplotlib
def test_compare_report_with_histograms(compare_report, tmp_path):
    rng = np.random.default_rng(1)
    ref = rng.standard_normal(3 * 32 * 32)
    histograms = {"ort:fp16:y": error_histogram(ref, ref + 1e-3 * rng.standard_normal(ref.size)),
                  "ort:fp32:y": np.abs(1e-7 * rng.standard_normal(ref.size))}  # raw |c - r| works too
    path = tmp_path / "compare.html"
    write_html(compare_report, path, histograms=histograms)
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<table>" in text and "PASS*" in text
    assert "http://" not in text and "https://" not in text and "<script" not in text  # self-contained
    images = _images(text)
    compared = {f"{r.backend}:{r.precision}:{o.name}" for r in compare_report.results if r.status != "reference"
                for o in r.outputs}
    assert len(images) == len(compared | set(histograms)) and all(image.startswith(PNG) for image in images)
    # the JSON form renders the same way (a saved report can be rendered later)
    assert _images(render_html(compare_report.to_dict(), histograms)) and "ort:fp16:y" in text


@needs_matplotlib
def test_histograms_from_result_details(compare_report):
    data = json.loads(json.dumps(compare_report.to_dict()))
    for result in data["results"]:
        result["details"].pop("error_histograms", None)
    assert not _images(render_html(data))
    ort16 = next(r for r in data["results"] if r["backend"] == "ort" and r["precision"] == "fp16")
    ort16["details"]["error_histograms"] = {"y": error_histogram(np.zeros(100), np.full(100, 1e-4))}
    assert len(_images(render_html(data))) == 1


@needs_matplotlib
def test_debug_report_has_curve_table_and_finding(debug_report, tmp_path):
    path = tmp_path / "debug.html"
    write_html(debug_report, path)
    text = path.read_text()
    assert "First divergent layer:" in text and "<code>features.4</code>" in text and "Triage: export" in text
    assert text.count("<tr") == len(debug_report.layers) + 1
    images = _images(text)
    assert len(images) == 2 and all(image.startswith(PNG) for image in images)  # curve + output histogram
    assert 'class="first"' in text


def test_without_matplotlib_the_page_keeps_its_tables(debug_report, monkeypatch):
    import deployval.report.html as html_module

    monkeypatch.setattr(html_module, "plots_available", lambda: False)
    text = render_html(debug_report)
    assert "plots need matplotlib" in text and "<table>" in text and "First divergent layer:" in text
    assert not _images(text)


def _chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome",
                                                         "google-chrome-stable")) if p), None)


def _headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"]
    return subprocess.run([browser, *flags, *args], capture_output=True, timeout=120)


@needs_matplotlib
def test_renders_in_headless_chromium(debug_report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the HTML report is not rendered")
    page = tmp_path / "debug.html"
    write_html(debug_report, page)
    dom = _headless(browser, tmp_path / "profile-dom", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout.decode()
    assert "<table>" in text and "features.4" in text and text.count("<img") == 2

    shot = tmp_path / "debug.png"
    result = _headless(browser, tmp_path / "profile-shot", "--hide-scrollbars", "--window-size=1280,1600",
                       f"--screenshot={shot}", page.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[..., :3]
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    # not blank: text, the red finding box and the plot put many distinct colours on the page
    assert pixels.std() > 0.05 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200
    red = (pixels[..., 0] > 0.7) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)
    assert red.sum() > 100  # the FAIL badge, the finding's border, failing rows


# ----------------------------------------------------------------------------- what a reader saw


# An engine's error as native runtimes word it: long, with a path that has no space to break at.
ENGINE_PATH = "/var/cache/deployval/engines/" + "a1b2c3d4" * 16 + ".plan"


class RefusingRunner(Runner):
    """Fails to build its engine with a long error message: an ERROR row with a long reason."""

    name: ClassVar[str] = "refusing"
    artifacts: ClassVar[dict[str, str]] = {"fp32": ONNX}

    def activate_impl(self) -> None:
        raise RuntimeError("[TRT] [E] 10: Could not find any implementation for node "
                           "/encoder/layers.11/self_attention/MultiheadAttention_fused_Softmax_MatMul_output_0; "
                           "no tactic fits the workspace of 1024 MiB (try a larger workspace size or a smaller "
                           f"input); the engine was not written to {ENGINE_PATH}")

    def infer_impl(self, feeds: Any) -> Any:
        raise AssertionError("never activated")


@pytest.fixture(scope="module")
def trap_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One real `compare` through the CLI (in-process, as the `cli` fixture runs it): a pass row, a
    bit-identical row, a FAIL row, a FAIL* row not faithful to fp16, an ERROR row with a long reason."""
    from deployval.cli import main

    directory = tmp_path_factory.mktemp("trap")
    register_backend(RefusingRunner)
    try:
        code = main(["compare", "dv_test_models:export_trap", "--input-shape", "x=1x3x16x16", "--backends",
                     "torch,torchscript,ort,refusing", "--precisions", "fp32,fp16", "--iterations", "1", "-q",
                     "--json", str(directory / "r.json"), "--html", str(directory / "r.html")])
    finally:
        _registered.pop("refusing", None)
    assert code == 1
    return json.loads((directory / "r.json").read_text()), (directory / "r.html").read_text()


def _rows(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{r['backend']}:{r['precision']}": r for r in data["results"]}


def _note(page: str, label: str) -> str:
    """The full-width note line under one row of the verdict table."""
    backend, precision = label.split(":")
    found = re.search(rf'<tr class="note" id="row-{backend}-{precision}">(.*?)</tr>', page, re.S)
    assert found, f"no note row for {label}"
    return found.group(1)


def test_long_error_reason_wraps_in_its_rows_note(trap_run):
    data, page = trap_run
    error = _rows(data)["refusing:fp32"]
    assert error["status"] == "error" and ENGINE_PATH in error["reason"]
    note = _note(page, "refusing:fp32")
    assert html.escape(error["reason"]) in note and "<b>refusing:fp32</b>" in note
    # no cell that holds prose is kept on one line: only headers, numbers, the key columns and single bounds
    style = page[page.index("<style>"):page.index("</style>")]
    nowrap = re.findall(r"([^{}]+)\{[^}]*white-space:nowrap", style)
    assert nowrap and all(set(re.split(r"\s*,\s*", s.strip())) <= {"th", "td.num", "td.key", ".nb"} for s in nowrap)
    assert "overflow-wrap:anywhere" in style  # the long path breaks instead of running off the page


def test_not_faithful_note_names_its_row(trap_run):
    data, page = trap_run
    rows = _rows(data)
    unfaithful = [label for label, r in rows.items() if not r["faithful"]]
    assert unfaithful == ["ort:fp16"]
    (warning,) = rows["ort:fp16"]["warnings"]
    assert page.count(html.escape(warning)) == 1  # once, under its own row, not in a list of the page's
    assert f"<b>ort:fp16</b> * {html.escape(warning)}" in _note(page, "ort:fp16")
    assert '<a href="#row-ort-fp16">FAIL*</a>' in page  # the star leads to the note
    for label, result in rows.items():
        if result["faithful"] and result["status"] in ("pass", "fail"):
            assert "not faithful" not in _note(page, label)


@needs_matplotlib
def test_bit_identical_output_shows_a_line_not_a_plot(trap_run):
    data, page = trap_run
    identical = [f"{label}:{o['name']}" for label, r in _rows(data).items() for o in r["outputs"]
                 if r["status"] != "reference" and o["metrics"]["max_abs"] == 0]
    assert "torchscript:fp32:output_0" in identical
    for key in identical:
        assert f"<b>{key}</b>: bit-identical to the reference" in page
        assert f'alt="histogram {key}"' not in page
    differing = [f"{label}:{o['name']}" for label, r in _rows(data).items() for o in r["outputs"]
                 if r["status"] != "reference" and o["metrics"]["max_abs"] > 0]
    assert all(f'alt="histogram {key}"' in page for key in differing)
    assert len(_images(page)) == len(differing)


def test_cosine_text_never_shows_a_rounded_one():
    assert cosine_text(0.9999995761963875) == "1 − 4.24e-07"
    assert cosine_text(1.0000000000000002) == "1 + 2.22e-16"
    assert cosine_text(1.0) == "1" and cosine_text(0.272285) == "0.272285" and cosine_text(-0.651364) == "-0.651364"
    assert cosine_text(0.9998) == "0.999800" and cosine_text(None) == "-" and cosine_text("NaN") == "nan"
    for value in (0.99999, 0.999995, 0.9999995, 1 - 1e-12):
        text = cosine_text(value)
        gap = float(text.split("−")[1]) if "−" in text else 1 - float(text)
        assert text not in ("1", "1.000000") and gap == pytest.approx(1 - value, rel=1e-2)


def test_cosine_cells_of_fp16_rows_differ_from_one(trap_run):
    data, page = trap_run
    for label, result in _rows(data).items():
        for output in result["outputs"]:
            cosine = output["metrics"]["cosine"]
            cell = re.search(rf'title="cosine {re.escape(repr(cosine))}">([^<]*)</td>', page)
            assert cell, (label, cosine)
            if output["metrics"]["max_abs"] == 0:
                assert cell.group(1) == "1"  # identical outputs: 1 + 2e-16 is rounding in the sum
            else:
                assert cell.group(1) == cosine_text(cosine) and cell.group(1) not in ("1", "1.000000")
    fp16 = _rows(data)["torch:fp16"]["outputs"][0]["metrics"]["cosine"]
    assert 0.9999 < fp16 < 1 and f"1 − {1 - fp16:.2e}" in page


def test_reproduce_command_and_minimum_passing_tolerance_per_row(trap_run):
    data, page = trap_run
    for label, result in _rows(data).items():
        if result["status"] in ("pass", "fail", "error"):
            assert f"<code>{html.escape(result['reproduce'])}</code>" in _note(page, label)
    cells = [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r'<td class="tol">(.*?)</td>', page)]
    pairs = list(zip(cells[::2], cells[1::2]))  # (tolerance, minimum passing tolerance) per output line
    ort32 = _rows(data)["ort:fp32"]["outputs"][0]
    least = ort32["min_passing_tolerance"]
    assert not ort32["passed"] and least["atol"] > 0.001
    assert ("atol=0.001 rtol=0.001", f"atol={fmt(least['atol'])} at rtol={fmt(least['at_rtol'])}, or "
            f"rtol={fmt(least['rtol'])} at atol={fmt(least['at_atol'])}") in pairs
    ort16 = _rows(data)["ort:fp16"]["outputs"][0]
    least = ort16["min_passing_tolerance"]
    assert ("rel_l2<=0.01, cosine>=0.9999",
            f"rel_l2<={fmt(least['rel_l2'])}, cosine>={cosine_text(least['cosine'])}") in pairs
    assert not any("mean_abs" in least for _, least in pairs)  # only the bounds the output is judged by
    assert '<span class="nb">rtol=1.00e-03,</span>' in page  # wraps between bounds, not at a number's '-'


def test_debug_help_text_has_no_markdown_asterisks(debug_report):
    page = render_html(debug_report)
    assert "*reference*" in debug_report.to_dict()["new_vs_inherited"]  # the JSON keeps its wording
    assert "*reference*" not in page and "<em>reference</em>" in page
    assert "atol+rtol*|ref|" in page  # a '*' in a formula is left alone


@needs_matplotlib
def test_debug_curve_label_and_legend_clear_of_the_data(debug_report):
    from deployval.report.html_plots import layer_curve_figure, pyplot

    data = debug_report.to_dict()
    figure = layer_curve_figure(data["layers"], data["first_divergent"], None)
    try:
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        (axis,) = figure.axes
        plot_area = axis.get_window_extent(renderer)
        (label,) = [t for t in axis.texts if t.get_text() == f"first divergent: {data['first_divergent']}"]
        legend = axis.get_legend()
        # above the plotting area, where no data line is drawn; the legend to its right
        assert label.get_window_extent(renderer).y0 >= plot_area.y1
        assert legend.get_window_extent(renderer).x0 >= plot_area.x1
        assert axis.title.get_window_extent(renderer).y0 >= label.get_window_extent(renderer).y1 - 1
        texts = [t.get_text() for t in legend.get_texts()]
        assert "first divergent layer" in texts and "beyond tolerance" in texts
    finally:
        pyplot().close(figure)


def _page_width(browser: str, page: Path, profile: Path) -> dict[str, int]:
    """Measured by the browser at 1400 px: the page's scroll, client and window widths, and how many of
    its table boxes scroll sideways (a table too wide to read whole). A copy of the page carries a
    script that writes them into its title once it has loaded; the report itself has no script."""
    probe = page.with_name("probe-" + page.name)
    probe.write_text(page.read_text().replace("</body>", (
        "<script>addEventListener('load',()=>{const d=document.documentElement;"
        "const boxes=[...document.querySelectorAll('.wide')].filter(b=>b.scrollWidth>b.clientWidth).length;"
        "document.title='W='+d.scrollWidth+' C='+d.clientWidth+' I='+innerWidth+' B='+boxes;});</script></body>")))
    dom = _headless(browser, profile, "--window-size=1400,900", "--virtual-time-budget=5000", "--dump-dom",
                    probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r"<title>W=(\d+) C=(\d+) I=(\d+) B=(\d+)</title>", dom.stdout.decode())
    assert found, dom.stdout.decode()[:500]
    return dict(zip(("scroll", "client", "window", "scrolling_tables"), map(int, found.groups())))


@needs_matplotlib
def test_no_horizontal_overflow_at_1400px_in_chromium(trap_run, debug_report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the HTML report is not rendered")
    compare_page, debug_page = tmp_path / "compare.html", tmp_path / "debug.html"
    compare_page.write_text(trap_run[1])
    write_html(debug_report, debug_page)
    for page in (compare_page, debug_page):
        width = _page_width(browser, page, tmp_path / f"profile-{page.stem}")
        assert width["window"] == 1400 and width["scroll"] <= width["client"] <= 1400, (page.name, width)
        assert width["scrolling_tables"] == 0, (page.name, width)
    # a page that does overflow is seen to (the check can fail)
    wide = tmp_path / "wide.html"
    wide.write_text(trap_run[1].replace("<h2>Verdict</h2>", '<h2>Verdict</h2><div style="width:1800px">x</div>'))
    assert _page_width(browser, wide, tmp_path / "profile-wide")["scroll"] > 1400

    shot = tmp_path / "compare.png"  # to look at by hand: pytest --basetemp=DIR keeps it
    result = _headless(browser, tmp_path / "profile-shot", "--window-size=1400,1800", f"--screenshot={shot}",
                       compare_page.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[..., :3]
    assert pixels.shape[1] == 1400 and pixels.std() > 0.05
