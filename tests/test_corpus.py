"""Every bad input of the corpus gets one clear line and its exit code, never a traceback; every
injected fault costs only its own row. docs/reliability.md is generated from the same corpus."""

from __future__ import annotations

import json
import os
import re

import pytest
from conftest import ROOT, assert_one_line_error
from corpus import CASES, FAULTS, injected


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, cli, tmp_path):
    marker = "/tmp/deployval-corpus-pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    result = cli(*case.build(tmp_path))
    assert_one_line_error(result, case.code, case.fragment)
    assert not os.path.exists(marker)  # a malicious checkpoint's payload never ran


@pytest.mark.parametrize("case", FAULTS, ids=[c.id for c in FAULTS])
def test_injected_fault(case, cli, tmp_path):
    with injected(case.id):
        result = cli(*case.build(tmp_path), "-q")
    assert_one_line_error(result, case.code, case.fragment)
    report = tmp_path / "r.json"
    if case.id != "disk-full-report":  # the other rows and the report survive the fault
        rows = {r["backend"]: r for r in json.loads(report.read_text())["results"]}
        assert rows["torch"]["status"] == "reference"
        survivors = [r for r in rows.values() if r["status"] == "pass"]
        assert survivors, rows
    else:
        assert "PASS" in result.out  # the results were shown before the report could not be written


def test_reliability_doc_matches_the_corpus():
    text = (ROOT / "docs" / "reliability.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \|.*?\| (\d) \|", text, flags=re.M))
    expected = {c.id: str(c.code) for c in [*CASES, *FAULTS]}
    assert rows == expected, "regenerate with: python scripts/reliability_table.py > docs/reliability.md"
