"""The release manifest, sharding and merged reports."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from conftest import assert_one_line_error

from deployval.catalog.manifest import load_manifest, parse_shard, shard
from deployval.errors import UsageError

MANIFEST = """
[defaults]
iterations = 1

[[model]]
model = "convs"
backends = ["torch", "torchscript", "ort"]
precisions = ["fp32", "fp16"]

[[model]]
model = "srcnn"
input_shapes = { image = [1, 3, 24, 24] }

[[model]]
id = "tagger-int8"
model = "tagger"
gate = ["torch:fp32", "ort:fp32", "ort:int8"]
"""


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "deployval.toml"
    path.write_text(MANIFEST)
    return path


def _by_entry(path):
    data = json.loads(path.read_text())
    entries = {}
    for r in data["reports"]:
        checks = sorted((x["backend"], x["precision"], x["status"]) for x in r["results"])
        entries[r.get("entry") or r["model"]["name"]] = (r["summary"]["verdict"], checks)
    return data["summary"], entries


def test_sharded_runs_merge_to_the_unsharded_verdict(cli, manifest, tmp_path):
    full, s1, s2, merged = (tmp_path / n for n in ("full.json", "s1.json", "s2.json", "merged.json"))
    assert cli("validate", "--all", "--manifest", manifest, "--json", full, "-q").code == 1  # tagger int8 fails
    assert cli("validate", "--all", "--manifest", manifest, "--shard", "1/2", "--json", s1, "-q").code == 1
    assert cli("validate", "--all", "--manifest", manifest, "--shard", "2/2", "--json", s2, "-q").code == 0
    result = cli("report", "merge", s1, s2, "--json", merged, "--junit", tmp_path / "m.xml",
                 "--markdown", tmp_path / "m.md")
    assert result.code == 1
    full_summary, full_entries = _by_entry(full)
    merged_summary, merged_entries = _by_entry(merged)
    assert merged_entries == full_entries
    assert merged_summary == full_summary
    assert full_summary["counts"] == {"reference": 3, "pass": 7, "skipped": 1, "fail": 1}
    assert full_entries["tagger-int8"][0] == "FAIL"
    suites = ET.parse(tmp_path / "m.xml").getroot()
    assert suites.tag == "testsuites" and len(list(suites)) == 3 and sum(int(s.get("failures")) for s in suites) == 1
    assert "| tagger-int8 | FAIL | ort:int8 |" in (tmp_path / "m.md").read_text()


def test_shards_partition_the_manifest(manifest):
    entries = load_manifest(manifest).entries
    for count in (1, 2, 3, 5):
        parts = [shard(entries, i, count) for i in range(1, count + 1)]
        ids = [e.id for part in parts for e in part]
        assert sorted(ids) == sorted(e.id for e in entries) and len(ids) == len(set(ids))
    assert [e.id for e in shard(entries, 1, 2)] == ["convs", "tagger-int8"]


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[model]]\nmodel = "convs"\nbakends = ["ort"]\n', "unknown key(s) bakends"),
        ('[[model]]\ncheckpoint = "x.pt"\n', "'model' is missing"),
        ('[[model]]\nmodel = "convs"\ncheckpoint = "missing.pt"\n', "checkpoint 'missing.pt' does not exist"),
        ('[[model]]\nmodel = "convs"\ninput_shapes = { x = [1, 0] }\n', "positive integers"),
        ('[[model]]\nmodel = "convs"\n[[model]]\nmodel = "convs"\n', "appear twice"),
        ('[[model]]\nmodel = "convs"\nprecisions = ["fp8"]\n', "unknown precision 'fp8'"),
        ("[[model]\n", "not valid TOML"),
        ("", "lists no models"),
    ],
)
def test_bad_manifests_are_refused_before_anything_runs(tmp_path, text, message):
    path = tmp_path / "deployval.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_manifest(path)


def test_bad_manifest_entry_model_is_one_line(cli, tmp_path):
    path = tmp_path / "deployval.toml"
    path.write_text('[[model]]\nmodel = "convs"\n[[model]]\nmodel = "nonexistent_model"\n')
    assert_one_line_error(cli("validate", "--all", "--manifest", path), 2, "unknown model 'nonexistent_model'")


def test_shard_parsing():
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "1", "a/b"):
        with pytest.raises(UsageError):
            parse_shard(bad)


def test_merge_refuses_the_same_entry_twice(cli, manifest, tmp_path):
    s1 = tmp_path / "s1.json"
    assert cli("validate", "--all", "--manifest", manifest, "--shard", "2/2", "--json", s1, "-q").code == 0
    assert_one_line_error(cli("report", "merge", s1, s1), 2, "shard 2/2 is in both")


def test_merge_reads_single_reports_too(cli, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert cli("compare", "convs", "-b", "torch,ort", "--iterations", "1", "--json", a, "-q").code == 0
    assert cli("compare", "dv_test_models:export_trap", "--input-shape", "x=1x3x8x8", "-b", "torch,ort",
               "--iterations", "1", "--json", b, "-q").code == 1
    result = cli("report", "merge", a, b, "--json", tmp_path / "m.json")
    assert result.code == 1
    assert json.loads((tmp_path / "m.json").read_text())["summary"]["verdict"] == "FAIL"


def test_a_manifest_entry_is_judged_against_its_golden_outputs(cli, tmp_path):
    """`expected` in an entry: every row of that model judged against the saved outputs; outputs that
    moved fail the release gate."""
    import numpy as np

    assert cli("compare", "convs", "--backends", "torch", "--save-inputs", tmp_path / "case.npz",
               "--save-outputs", tmp_path / "golden.npz", "-q").code == 0
    with np.load(tmp_path / "golden.npz") as data:
        moved = {name: data[name] * 1.05 if name == "y" else data[name] for name in data.files}
    np.savez(tmp_path / "moved.npz", **moved)
    for expected, code, status in (("golden.npz", 0, "pass"), ("moved.npz", 1, "fail")):
        path = tmp_path / "deployval.toml"
        path.write_text(f'[[model]]\nid = "convs"\nmodel = "convs"\ninputs = "case.npz"\nexpected = "{expected}"\n'
                        'gate = ["torch:fp32", "ort:fp32"]\niterations = 1\n')
        report = tmp_path / "suite.json"
        result = cli("validate", "--all", "--manifest", path, "--json", report, "-q")
        assert result.code == code, result.out + result.err
        [model] = json.loads(report.read_text())["reports"]
        assert {r["backend"]: r["status"] for r in model["results"]} == {"torch": status, "ort": status}
        assert model["analysis"]["expected_outputs"]["path"].endswith(expected)
        assert f"--expected {tmp_path / expected}" in model["results"][1]["reproduce"]
