"""The HTML report: self-contained (inline CSS, base64 PNG plots, nothing fetched), for compare and
debug reports; rendered by headless Chromium where it is installed."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from deployval.report.html import render_html, write_html
from deployval.stats import error_histogram

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
    from deployval.arguments import parse_input_shape
    from deployval.debug.run import run_debug
    from deployval.registry import resolve_model
    from deployval.spec import RunConfig

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
