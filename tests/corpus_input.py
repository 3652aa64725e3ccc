"""More bad inputs of the reliability corpus: each must exit 2 with one line, never 'internal error'."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from corpus import Case

X = (1, 3, 32, 32)


def _text(tmp: Path, name: str, text: str) -> Path:
    (tmp / name).write_text(text)
    return tmp / name


def _json(tmp: Path, name: str, data: object) -> Path:
    return _text(tmp, name, json.dumps(data))


def _npy_header_token_error(tmp: Path, name: str) -> Path:
    """An .npz whose x.npy header has an unclosed bracket: numpy's header parser raises TokenError."""
    with zipfile.ZipFile(tmp / name, "w") as archive:
        archive.writestr("x.npy", _npy_header_bytes())
    return tmp / name


def _npy_header_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(X, np.float32))
    data = buffer.getvalue()
    length = int.from_bytes(data[8:10], "little")
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': ((1, 3, 32, 32), }"
    header = header + b" " * (length - len(header) - 1) + b"\n"
    return data[:10] + header + data[10 + length:]


def _report(**changes: object) -> dict[str, object]:
    """A minimal well-formed compare report, changed as the case needs."""
    report: dict[str, object] = {
        "format_version": "1.0", "model": {"name": "convs"},
        "results": [{"backend": "torch", "precision": "fp32", "status": "reference"},
                    {"backend": "ort", "precision": "fp32", "status": "pass"}],
        "summary": {"verdict": "PASS", "exit_code": 0},
    }
    report.update(changes)
    return report


def _deep_report(tmp: Path) -> list[str]:
    path = _text(tmp, "deep.json", "[" * 100_000 + "]" * 100_000)
    return ["report", "merge", str(path)]


def _manifest(tmp: Path, body: str, *, prefix: str = "",
              entry: str = '[[model]]\nmodel = "convs"\nbackends = ["torch", "ort"]\n') -> list[str]:
    path = _text(tmp, "deployval.toml", prefix + entry + body)
    return ["validate", "--all", "--manifest", str(path)]


CASES: list[Case] = [
    Case("inputs-npz-bad-header", "an .npz whose .npy header does not parse (numpy raises TokenError)",
         lambda t: ["compare", "convs", "--inputs", str(_npy_header_token_error(t, "i.npz"))], 2,
         "cannot read inputs file"),
    Case("inputs-npy-bad-header", "a .npy whose header does not parse",
         lambda t: ["compare", "convs", "--inputs", str(_file(t, "i.npy", _npy_header_bytes()))], 2,
         "TokenError"),
    Case("shape-beyond-memory", "--input-shape x=1x3x5000000x4000000 (hundreds of TiB of inputs)",
         lambda t: ["compare", "convs", "--input-shape", "x=1x3x5000000x4000000"], 2, "GiB available"),
    Case("shape-beyond-int64", "--input-shape x=99999999999999999999x3 (a dimension beyond int64)",
         lambda t: ["compare", "convs", "--input-shape", "x=99999999999999999999x3"], 2, "beyond int64"),
    Case("shape-5000-digits", "a dimension of 5,000 digits (int() refuses to parse it)",
         lambda t: ["compare", "convs", "--input-shape", "x=1x" + "9" * 5000], 2, "beyond int64"),
    Case("manifest-bound-is-a-string", "a manifest tolerance rel_l2 = \"big\"",
         lambda t: _manifest(t, '[model.tolerances]\n"ort:fp32" = { rel_l2 = "big" }\n'), 2,
         'tolerances."ort:fp32".rel_l2 must be a number >= 0, not "big" (a string)'),
    Case("manifest-time-budget-string", "a manifest time_budget = \"x\"",
         lambda t: _manifest(t, 'time_budget = "x"\n'), 2,
         "model #1 (convs): 'time_budget' must be a positive number of seconds, not \"x\" (a string)"),
    Case("manifest-iterations-boolean", "a manifest [defaults] iterations = true",
         lambda t: _manifest(t, "", prefix="[defaults]\niterations = true\n"), 2,
         "from [defaults]: 'iterations' must be an integer >= 0 (timed runs), not true (a boolean)"),
    Case("manifest-seed-negative", "a manifest seed = -1",
         lambda t: _manifest(t, "seed = -1\n"), 2, "'seed' must be an integer >= 0"),
    Case("manifest-device-number", "a manifest device = 3",
         lambda t: _manifest(t, "device = 3\n"), 2, "'device' must be 'cpu' or 'cuda', not 3 (an integer)"),
    Case("manifest-id-number", "a manifest id = 5",
         lambda t: _manifest(t, "id = 5\n"), 2, "'id' must be a non-empty string, not 5 (an integer)"),
    Case("manifest-range-strings", "a manifest input_ranges = { x = [\"a\", \"b\"] }",
         lambda t: _manifest(t, 'input_ranges = { x = ["a", "b"] }\n'), 2, "input_ranges.x must be [low, high]"),
    Case("manifest-shape-boolean", "a manifest input_shapes = { x = [1, 3, 32, true] }",
         lambda t: _manifest(t, "input_shapes = { x = [1, 3, 32, true] }\n"), 2,
         "input_shapes.x must be a list of positive integers, not [1, 3, 32, true]"),
    Case("manifest-path-is-a-date", "a manifest checkpoint = 2024-01-01 (a TOML date)",
         lambda t: _manifest(t, "checkpoint = 2024-01-01\n"), 2,
         "'checkpoint' must be a path (a string), not 2024-01-01"),
    Case("manifest-pattern-typo", "a manifest tolerance for \"ort:fp61\" (it would match no row)",
         lambda t: _manifest(t, '[model.tolerances]\n"ort:fp61" = { rel_l2 = 0.1 }\n'), 2,
         'tolerances."ort:fp61" is not a backend:precision[:output] pattern'),
    Case("manifest-cosine-above-one", "a manifest cosine bound of 1.5 (no row could pass)",
         lambda t: _manifest(t, '[model.tolerances]\n"ort:fp32" = { cosine = 1.5 }\n'), 2,
         "cosine must be a fraction between 0 and 1"),
    Case("manifest-gate-typo", "a manifest gate = [\"ort:fp64\"]",
         lambda t: _manifest(t, "", entry='[[model]]\nmodel = "convs"\ngate = ["ort:fp64"]\n'), 2,
         "unknown backend:precision 'ort:fp64' in 'gate'"),
    Case("manifest-unknown-backend", "a manifest backends = [\"tflite\"]",
         lambda t: _manifest(t, "", entry='[[model]]\nmodel = "convs"\nbackends = ["tflite"]\n'), 2,
         "unknown backend 'tflite' in 'backends'"),
    Case("manifest-model-table", "a manifest with [model] (a table) instead of [[model]] entries",
         lambda t: _manifest(t, "", entry='[model]\nmodel = "convs"\n'), 2, "models are [[model]] entries"),
    Case("manifest-not-utf8", "a manifest in Latin-1",
         lambda t: ["validate", "--all", "--manifest",
                    str(_file(t, "m.toml", b'[[model]]\nmodel = "convs"\nid = "caf\xe9"\n'))], 2, "not UTF-8"),
    Case("report-nested-deeply", "report merge of a JSON file nested 100,000 levels deep", _deep_report, 2,
         "nested too deeply"),
    Case("report-diff-nested-deeply", "report diff of a JSON file nested 100,000 levels deep",
         lambda t: ["report", "diff", str(_json(t, "a.json", _report())), _deep_report(t)[2]], 2,
         "nested too deeply"),
    Case("report-newer-format", "a report of format 1.7 (this deployval writes 1.0)",
         lambda t: ["report", "merge", str(_json(t, "r.json", _report(format_version="1.7")))], 2,
         "has format 1.7, newer than the 1.0"),
    Case("report-format-not-a-version", "a report whose format_version is a number, not '1.0'",
         lambda t: ["report", "merge", str(_json(t, "r.json", _report(format_version=1)))], 2,
         "has format 1; this deployval reads 1.0"),
    Case("report-merge-no-model", "report merge of a report that names no model",
         lambda t: ["report", "merge", str(_json(t, "r.json", _report(model=None)))], 2, "names no model"),
    Case("report-merge-no-summary", "report merge of a report without its summary",
         lambda t: ["report", "merge", str(_json(t, "r.json", _report(summary=None)))], 2,
         "no summary with its verdict and exit code"),
    Case("report-merge-suite-of-numbers", "report merge of a suite whose reports are numbers",
         lambda t: ["report", "merge", str(_json(t, "r.json", {"format_version": "1.0", "kind": "suite",
                                                                   "reports": [1], "errors": []}))], 2,
         "not an object with a 'results' list"),
    Case("report-merge-debug-report", "report merge of a debug report",
         lambda t: ["report", "merge", str(_json(t, "r.json", _report(kind="debug")))], 2, "is a debug report"),
    Case("report-not-utf8", "a report in Latin-1",
         lambda t: ["report", "merge", str(_file(t, "r.json", b'{"format_version": "1.0\xe9"}'))], 2, "not UTF-8"),
    Case("report-is-a-device", "report merge /dev/zero (would be read forever)",
         lambda t: ["report", "merge", "/dev/zero"], 2, "is a device"),
    Case("json-report-in-proc", "--json /proc/version (a file no one can replace)",
         lambda t: ["compare", "convs", "--json", "/proc/version"], 2, "no file can be created in '/proc'"),
    Case("json-report-dev-null", "--json /dev/null (a device: it would be replaced by a file)",
         lambda t: ["compare", "convs", "--json", "/dev/null"], 2, "not a regular file"),
    Case("json-report-under-a-file", "--json under a path that is a file",
         lambda t: ["compare", "convs", "--json", str(_text(t, "f", "") / "r.json")], 2, "is not a directory"),
    Case("json-report-name-too-long", "--json with a 251-character file name",
         lambda t: ["compare", "convs", "--json", str(t / ("a" * 246 + ".json"))], 2, "File name too long"),
]


def _labelled_set(tmp: Path, labels: str) -> list[str]:
    """Three samples of the ten-class test model and a labels file: the args that judge them."""
    (tmp / "set").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(tmp / "set" / f"s{i}.npy", rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    (tmp / "labels.csv").write_text(labels)
    return ["compare", "dv_test_models:ten_classes", "--dataset", str(tmp / "set"), "--labels",
            str(tmp / "labels.csv"), "-b", "ort", "--iterations", "1", "--no-cache", "--json", str(tmp / "r.json")]


def _unmatched_ids_listed(tmp: Path, outcome: object) -> None:
    labels = json.loads((tmp / "r.json").read_text())["analysis"]["dataset"]["labels"]
    assert labels["not_in_dataset"] == ["s7.npy", "cat.npy"] and labels["labelled"] == 3, labels


LABEL_CASES: list[Case] = [
    Case("labels-class-out-of-range", "--labels giving class 12 to a sample of a 10-class output",
         lambda t: _labelled_set(t, "s0.npy,1\ns1.npy,12\ns2.npy,3\n"), 2, "has class 12, but output"),
    Case("labels-duplicate-id", "--labels naming one sample twice, with two different classes",
         lambda t: _labelled_set(t, "s0.npy,1\ns1.npy,2\ns0,3\n"), 2, "labelled twice"),
    Case("labels-ids-not-in-dataset", "--labels with ids that name no sample of the data set (listed, counted, "
         "judged on the rest)", lambda t: _labelled_set(t, "s0.npy,1\ns1.npy,2\ns2.npy,3\ns7.npy,4\ncat.npy,5\n"),
         0, "PASS", error_line=False, check=_unmatched_ids_listed),
]


def _set_with(tmp: Path, odd: str) -> list[str]:
    """Three float32 samples of the ten-class model and one odd entry: an int64 array or a dangling link."""
    args = _labelled_set(tmp, "s0.npy,1\n")[:6]
    if odd == "int64":
        np.save(tmp / "set" / "s3.npy", np.ones((1, 3, 8, 8), np.int64))
    else:
        (tmp / "set" / "s3.npy").symlink_to(tmp / "gone.npy")
    return [*args, "-b", "ort", "--iterations", "1", "--no-cache", "--json", str(tmp / "r.json")]


def _left_out(reason: str):
    def check(tmp: Path, outcome: object) -> None:
        dataset = json.loads((tmp / "r.json").read_text())["analysis"]["dataset"]
        assert dataset["samples"] == 3, dataset
        assert [u["sample"] for u in dataset["unusable"]] == ["s3.npy"], dataset["unusable"]
        assert reason in dataset["unusable"][0]["reason"], dataset["unusable"]
    return check


LABEL_CASES += [
    Case("dataset-int64-sample", "an int64 array in a float32 data set (once: judged, cast silently)",
         lambda t: _set_with(t, "int64"), 0, "PASS", error_line=False, check=_left_out("int64")),
    Case("dataset-dangling-link", "a symbolic link to nothing in a data set (once: skipped, never counted)",
         lambda t: _set_with(t, "link"), 0, "PASS", error_line=False, check=_left_out("")),
]
CASES += LABEL_CASES


def _file(tmp: Path, name: str, content: bytes) -> Path:
    (tmp / name).write_bytes(content)
    return tmp / name
