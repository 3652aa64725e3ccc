"""Every case of the reliability corpus gives its promised result: a bad input one clear line and its exit
code, never a traceback; an injected fault costs only its own row; a verdict case never ends in a PASS it
has not earned. docs/reliability.md is generated from the same corpus (reliability_corpus.py)."""

from __future__ import annotations

import json
import os
import re

import pytest
from conftest import ROOT
from corpus import FAULTS
from reliability_corpus import ALL_CASES, SECTIONS, problems, run_case


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_case(case, tmp_path):
    marker = "/tmp/deployval-corpus-pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    outcome = run_case(case, tmp_path)
    assert not problems(case, outcome, tmp_path), problems(case, outcome, tmp_path)
    assert not os.path.exists(marker)  # a malicious checkpoint's payload never ran
    if case in FAULTS:
        report = tmp_path / "r.json"
        if case.id != "disk-full-report":  # the other rows and the report survive the fault
            rows = {r["backend"]: r for r in json.loads(report.read_text())["results"]}
            assert rows["torch"]["status"] == "reference"
            survivors = [r for r in rows.values() if r["status"] == "pass"]
            assert survivors, rows
        else:
            assert "PASS" in outcome.out  # the results were shown before the report could not be written


def test_case_ids_are_unique():
    ids = [c.id for c in ALL_CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_reliability_doc_matches_the_corpus():
    text = (ROOT / "docs" / "reliability.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \|.*?\| (\d+) \|", text, flags=re.M))
    expected = {c.id: str(c.code) for section in SECTIONS for c in section.cases}
    assert rows == expected, "regenerate with: python scripts/reliability_table.py > docs/reliability.md"
