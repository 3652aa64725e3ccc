"""The README is tested: every command of README.md's and docs/*.md's command blocks runs here.

`readme_blocks.extract_commands` finds the commands; each gets exactly one disposition, by the rules
below (a command no rule covers fails: add a rule, never an exception):

- **synopsis**: a `deployval` line with `[...]` optional groups, `|` alternatives or UPPERCASE
  placeholders (MODEL, DIR, FILE.json). Every option it names must be one of that command's options in
  its real `--help`, shown with a value exactly when the option takes one.
- **skip**: what cannot run here (`SKIPS`): a GPU, docker, a Ray cluster, network installs, the test
  suite itself, Model Explorer's server; the reason is the skip's.
- **run** (and **slow**, the same in a `slow` case): `EXPECT`, keyed by the command as written. It runs
  as written in a copy of the workspace `readme_fixtures.build_workspace` makes (the files the examples
  name), `deployval` in-process, anything else through bash. Only options that change no result are
  added, where the command has them: `--iterations 1`, `--cache-dir` (one cache for the file), `-q`.
  Asserted: the exit code the README implies, the output it shows (a transcript's lines, numbers
  aside; `exit code N` in a transcript is the exit code) or states, and the files it writes.

The headline example (the first transcript of the README) must equal a real run's output line for
line in everything but the numbers.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from readme_blocks import Command, extract_commands, python_blocks, readme_commands, strip_comment
from readme_fixtures import build_workspace, silero_data_dir

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
VENV_BIN = Path(sys.executable).parent

COMMANDS = readme_commands(ROOT)

# --------------------------------------------------------------------------- dispositions

SKIPS: list[tuple[str, str]] = [
    (r"^make test$", "`make test` is the default suite this test is part of (about 12 minutes)"),
    (r"^make test-slow$", "`make test-slow` is the slow suite this file's slow cases are part of"),
    (r"make test-gpu", "GPU tests: needs a CUDA device (and TensorRT for most)"),
    (r"scripts/gpu-check\.sh", "the GPU validation script: needs an NVIDIA GPU"),
    (r"^pip install", "installs packages from the network"),
    (r"^make lint-docker$", "installs hadolint and shellcheck from the package index (network) first"),
    (r"^make docker-|^docker ", "builds a container image: needs docker or podman and base images (network)"),
    (r"^model-explorer ", "starts Model Explorer's web server (ai-edge-model-explorer, a network install)"),
    (r"--device cuda", "needs a CUDA GPU"),
    (r"--backends? \S*trt", "TensorRT backends need a CUDA GPU and TensorRT"),
    (r"--ray-address", "needs a Ray cluster"),
    (r"triton\.url=\S*staging", "needs the user's own Triton server (tests/test_triton.py asks a real one "
                                 "on 127.0.0.1)"),
]


@dataclass(frozen=True)
class Expect:
    """What running a command must give."""

    code: int = 0  # the exit code the README implies
    shows: tuple[str, ...] = ()  # text the output (stdout and stderr) contains
    files: tuple[str, ...] = ()  # files the command writes, relative to its directory
    before: tuple[str, ...] = ()  # commands whose files it reads, run first in the same directory
    columns: int = 160  # the terminal width its transcript was printed at
    exact: bool = False  # its transcript equals the output line for line, numbers aside
    slow: bool = False  # full-size zoo models, benchmarks: `make test-slow`
    cwd: str = "workspace"  # "workspace" (a copy of the example files) or "root" (the repository)
    needs: str = ""  # "silero": the silero-vad package's files; "make": an up-to-date .venv


REPRO = "PYTHONPATH=tests deployval debug debug_models:conv_stack --input-shape x=1x3x16x16 --repro repro/"
MEDIANS = "deployval.catalog.zoo.hyperprior:build_without_medians"
MINILM_FILES = ("PYTHONPATH=tests python -c \"import os, numpy as np, real_models as m; os.makedirs('minilm_calib', "
                "exist_ok=True); [np.savez(f'minilm_calib/s{i}.npz', **s) for i, s in enumerate(m.minilm_inputs(8))]; "
                "np.savez('minilm.npz', **m.minilm_inputs(1)[0])\"")

EXPECT: dict[str, Expect] = {
    # the headline
    "deployval compare convs --backends torch,torchscript,ort --precisions fp32,fp16": Expect(columns=120, exact=True),
    # Commands
    "deployval models": Expect(shows=("fine_organs", "srcnn", "convs", "tagger", "hyperprior")),
    "deployval backends": Expect(shows=("torch", "torchscript", "ort", "trt", "ort-trt")),
    # Models
    "deployval validate fine_organs --checkpoint model_final_checkpoint.model": Expect(slow=True, shows=("PASS",)),
    "deployval compare mypkg.models:build_net --input-shape x=1x3x224x224 --checkpoint weights.pt": Expect(),
    "deployval compare mypkg.models:build_tagger --input-shape ids=1x128:int64 --input-range ids=0,30000": Expect(),
    "deployval compare model.ts --input-shape x=1x3x224x224": Expect(shows=("legacy exporter",)),
    "deployval compare model.onnx -p fp32,fp16,int8": Expect(shows=("REFERENCE", "PASS*")),
    "deployval compare mypkg.models:build_net --inputs batch.npz": Expect(shows=("x 2x3x224x224",)),
    "deployval compare path/to/net.py:build_net --input-shape x=1x3x224x224": Expect(),
    "deployval compare silero_vad.jit --inputs chunk.npy --arg sr=16000 --backends torch,torchscript":
        Expect(needs="silero", shows=("torchscript",)),
    # Inputs
    "deployval compare model.onnx --inputs case.npz --save-outputs golden-1.4.npz": Expect(files=("golden-1.4.npz",)),
    "deployval compare pkg.models:classifier --dataset val/ --labels val.csv --backends torch,ort --precisions "
    "fp32,int8 --calibration calib/ --max-top1-drop 0.5%": Expect(shows=("against the labels top1",)),
    # Judging by the task
    "deployval compare ocr_rec.onnx --dataset lines/ --backends ort --precisions int8 --task ctc --judge task":
        Expect(shows=("judged by the task check only",)),
    "deployval compare detector.onnx --backends ort --precisions int8 --task detection:score=0.3 --slices "
    "output0:1=0:4,4:": Expect(shows=("task ort:int8: pass",)),
    # Find where it diverges
    "PYTHONPATH=tests deployval debug debug_models:conv_stack --input-shape x=1x3x16x16 --backend ort": Expect(code=1),
    "deployval debug det.onnx --backend ort --precision int8 --dataset data/ --inputs data/s3.npy": Expect(code=1),
    REPRO: Expect(code=1, files=("repro/model.onnx", "repro/inputs.npz", "repro/expected.npz", "repro/README.md")),
    "deployval compare repro/model.onnx --inputs repro/inputs.npz --expected repro/expected.npz --backends ort "
    "--precisions fp32 --atol 0.001 --rtol 0.001": Expect(code=1, before=(REPRO,)),
    "deployval validate hyperprior --submodule all": Expect(shows=("PASS (5 models)",)),
    f"deployval compare {MEDIANS} --input-shape x=1x3x64x64 --backends torch,ort":
        Expect(code=1, shows=("output_1: ", "output_2: ")),
    f"deployval compare {MEDIANS} --submodule entropy_bottleneck --input-shape input=1x32x1x1 --input-range "
    "input=-5,5 --backends torch,ort": Expect(code=1, shows=("build_without_medians.entropy_bottleneck", "FAIL")),
    f"deployval debug {MEDIANS} --input-shape x=1x3x64x64 --backend ort":
        Expect(code=1, shows=("first divergent layer: entropy_bottleneck", "triage: export")),
    "deployval debug silero_vad_16k_op15.onnx --input-shape input=1x512 --input-shape state=2x1x128 --input-range "
    "sr=16000,16001 --precision int8 --modules Conv,If,Sigmoid": Expect(code=1, needs="silero", columns=140),
    # Use in a release pipeline
    "deployval report merge reports/shard-*.json --json release.json --junit release.xml --markdown release.md":
        Expect(files=("release.json", "release.xml", "release.md"), shows=("PASS (2 models)",)),
    "deployval report diff last-release.json release.json --markdown diff.md --json diff.json":
        Expect(files=("diff.md", "diff.json"), shows=("NO REGRESSION",)),
    # Development, and the top of the README
    "make validate": Expect(slow=True, cwd="root", needs="make"),
    "make lint": Expect(cwd="root", needs="make"),
    "make bench": Expect(slow=True, cwd="root", needs="make", shows=("cold wall",)),
    # docs/precision.md
    ".venv/bin/python bench/real_models.py --slow": Expect(slow=True, cwd="root"),
    ".venv/bin/python bench/int8_calibration.py --shape 48x80x80 --calibration 8 --eval 4":
        Expect(slow=True, cwd="root"),
    "deployval precision fine_organs --input-shape input=1x1x48x80x80 --sweep --plot "
    "docs/precision-sweep-fine_organs.png": Expect(slow=True, files=("docs/precision-sweep-fine_organs.png",)),
    "python bench/classifier_top1.py --images 500": Expect(slow=True, cwd="root"),
    "deployval precision fine_organs --input-shape input=1x1x48x80x80 -p int8 --json fo_sens.json":
        Expect(slow=True, files=("fo_sens.json",), shows=("FIXED: keeping 8 of 28 layers",)),
    MINILM_FILES: Expect(files=("minilm.npz", "minilm_calib/s7.npz")),
    "PYTHONPATH=tests deployval compare real_models:minilm --inputs minilm.npz --backends torch,ort --precisions "
    "fp32,int8 --calibration minilm_calib/": Expect(slow=True, code=1, before=(MINILM_FILES,)),
    "PYTHONPATH=tests deployval precision real_models:minilm --inputs minilm.npz -p int8 --calibration minilm_calib/":
        Expect(slow=True, before=(MINILM_FILES,), shows=("FIXED",)),
}

# Found by these tests: README examples that fail because of a bug in deployval itself (the lead flips them).
XFAIL: dict[str, str] = {}  # command -> why it fails today (a deployval bug being fixed)

_PLACEHOLDER = re.compile(r"(?<![\w$.-])[A-Z][A-Z0-9_]*(?:\.\w+)?(?![\w=])")


def program(text: str) -> tuple[dict[str, str], list[str]]:
    """A command's environment assignments and its words (shell quoting removed)."""
    words = shlex.split(text)
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return env, words


def is_synopsis(text: str) -> bool:
    """A line with optional groups, alternatives or UPPERCASE placeholders: it shows a command's form."""
    unquoted = re.sub(r"'[^']*'|\"[^\"]*\"", "value", text)
    body = re.sub(r"^(?:[A-Za-z_]\w*=\S*\s+)+", "", unquoted)  # environment assignments are not placeholders
    return "[" in body or "|" in body or _PLACEHOLDER.search(body) is not None


def disposition(command: Command) -> tuple[str, object]:
    """("synopsis", None), ("skip", reason), ("run" or "slow", Expect), or ("unknown", why)."""
    _, words = program(command.text)
    is_deployval = bool(words) and words[0] in ("deployval", ".venv/bin/deployval")
    if is_deployval and is_synopsis(command.text):
        return "synopsis", None
    for pattern, reason in SKIPS:
        if re.search(pattern, command.text):
            return "skip", reason
    expect = EXPECT.get(command.text)
    if expect is not None:
        return ("slow" if expect.slow else "run"), expect
    return "unknown", (f"{command.id}: no rule covers `{command.text}`: add it to EXPECT (with what the README "
                       "says it gives), or a SKIPS pattern with the reason it cannot run here")


def _param(command: Command) -> object:
    kind, _ = disposition(command)
    marks = [pytest.mark.slow] if kind == "slow" else []
    if command.text in XFAIL:
        marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[command.text]))
    return pytest.param(command, id=command.id, marks=marks)


# --------------------------------------------------------------------------- help and synopsis


@cache
def help_options(subcommand: tuple[str, ...]) -> dict[str, bool]:
    """Every option of `deployval SUBCOMMAND --help` -> whether it takes a value (read from the help text
    the command prints: the option column of each section after the description)."""
    import contextlib
    import io

    from deployval.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main([*subcommand, "--help"])
    assert code == 0, f"`deployval {' '.join(subcommand)} --help` exited {code}"
    text = buffer.getvalue()
    options: dict[str, bool] = {}
    sections = False
    for line in text.splitlines():
        if re.match(r"^\S.*:$", line) and not line.startswith("Usage:"):
            sections = True
        match = re.match(r"^ {2}(-\S.*?)(?: {2,}|$)", line)
        if sections and match:
            words = match.group(1).replace(",", " ").split()
            names = [w for w in words if w.startswith("-")]
            takes_value = any(not w.startswith("-") and w != "/" for w in words)
            for name in names:
                options[name] = takes_value
    assert options, f"no options read from `deployval {' '.join(subcommand)} --help`"
    return options


def synopsis_problems(text: str) -> list[str]:
    """What a synopsis line gets wrong against the command's real --help."""
    words = re.split(r"[\s\[\]|]+", re.sub(r"'[^']*'", "VALUE", text))
    words = [w for w in words if w]
    assert words[0] == "deployval", text
    subcommand = tuple(words[1:3]) if words[1] == "report" else (words[1],)
    options = help_options(subcommand)
    problems = []
    for i, word in enumerate(words):
        if not re.fullmatch(r"--?[A-Za-z][\w-]*", word):
            continue
        nxt = words[i + 1] if i + 1 < len(words) else ""
        shows_value = bool(nxt) and not nxt.startswith("-") and nxt != "..."
        if word not in options:
            problems.append(f"{word}: `deployval {' '.join(subcommand)}` has no such option")
        elif options[word] and not shows_value:
            problems.append(f"{word} takes a value, the synopsis shows none")
        elif not options[word] and shows_value:
            problems.append(f"{word} is a flag, the synopsis shows a value ({nxt})")
    return problems


# --------------------------------------------------------------------------- running


@dataclass
class Ran:
    code: int
    out: str
    err: str


SPEED_OPTIONS = (("--iterations", "1"), ("--cache-dir", None), ("-q", None))


def _speed_options(words: list[str], cache_dir: Path) -> list[str]:
    """Options that change no result, for the commands that have them and were not given them."""
    if len(words) < 2 or words[1].startswith("-") or words[1] == "--help":
        return []
    subcommand = tuple(words[1:3]) if words[1] == "report" else (words[1],)
    options = help_options(subcommand)
    extra: list[str] = []
    for name, value in SPEED_OPTIONS:
        if name in options and name not in words:
            extra += [name, str(cache_dir)] if name == "--cache-dir" else [name] + ([value] if value else [])
    return extra


def _expand(words: list[str], cwd: Path) -> list[str]:
    """Shell globbing, as bash does it (a pattern that matches nothing stays as it is)."""
    out: list[str] = []
    for word in words:
        matches = sorted(glob.glob(word, root_dir=cwd)) if any(c in word for c in "*?") else []
        out += matches or [word]
    return out


def run_command(text: str, cwd: Path, columns: int, cache_dir: Path, monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> Ran:
    """Run one README command as a user would in `cwd`: `deployval` in this process (the same entry
    point as the console script), anything else through bash with the venv first on PATH."""
    env, words = program(text)
    if words[0] not in ("deployval", ".venv/bin/deployval"):
        full_env = {**os.environ, **env, "COLUMNS": str(columns),
                    "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        proc = subprocess.run(["bash", "-c", text], cwd=cwd, env=full_env, capture_output=True, text=True,
                              timeout=3000)
        return Ran(proc.returncode, proc.stdout, proc.stderr)
    from deployval.cli import main

    argv = _expand(words[1:], cwd) + _speed_options(words, cache_dir)
    before = set(sys.modules)
    with monkeypatch.context() as patch:
        patch.chdir(cwd)
        patch.setenv("COLUMNS", str(columns))
        # as the console script sees it: neither the working directory nor tests/ is on the import path,
        # PYTHONPATH's entries first. One list set and restored whole: monkeypatch.syspath_prepend would
        # write its copy of this filtered list back into the real sys.path when it undoes.
        prepended: list[str] = []
        for name, value in env.items():
            patch.setenv(name, value)
            if name == "PYTHONPATH":
                prepended += [str((cwd / entry).resolve()) for entry in value.split(os.pathsep)]
        patch.setattr(sys, "path", [*prepended, *(p for p in sys.path
                                                  if p not in ("", ".") and Path(p).resolve() != TESTS)])
        capsys.readouterr()
        code = main(argv)
        captured = capsys.readouterr()
    for name in set(sys.modules) - before:  # the examples' own modules: the next copy imports its own
        module_file = getattr(sys.modules[name], "__file__", None) or ""
        if module_file.startswith(str(cwd)):
            del sys.modules[name]
    return Ran(code, captured.out, captured.err)


_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?%?"
_ANY_NUMBER = re.compile(rf"(?<![\w.]){_NUMBER}(?![\w]|\.\w)")
_FRACTION = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d+(?:e[-+]?\d+)?|\d+e[-+]?\d+|\d+(?:\.\d+)?%)(?![\w]|\.\w)")


def normalize(line: str) -> str:
    """A line of console output with its measurements replaced by `#`: every number in a table row,
    fractions, exponents and percentages elsewhere (counts and exit codes stay); rules and runs of
    spaces collapsed, so that column widths do not matter."""
    text = line.strip()
    table = text[:1] in "│┃"
    text = (_ANY_NUMBER if table else _FRACTION).sub("#", text)
    text = re.sub(r"([━─])\1+", r"\1", text)
    return re.sub(r"\s+", " ", text)


def transcript_lines(command: Command) -> list[str]:
    """The output a transcript shows, without the blank lines and the `...` that elide."""
    lines = []
    for line in command.output:
        text = line.strip()
        if text.startswith("..."):
            text = text[3:].strip()
        if text:
            lines.append(text)
    return lines


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the example files, the artifact cache the runs share), built once for the module."""
    cache_dir = tmp_path_factory.mktemp("readme-cache")
    root = tmp_path_factory.mktemp("readme-workspace") / "work"
    build_workspace(root, cache_dir)
    return root, cache_dir


def _copy(workspace: Path, tmp_path: Path) -> Path:
    target = tmp_path / "work"
    shutil.copytree(workspace, target, symlinks=True)
    (target / "docs").mkdir(exist_ok=True)
    return target


def _needs(expect: Expect) -> None:
    if expect.needs == "silero" and silero_data_dir() is None:
        pytest.skip("the silero-vad package is not installed (make install brings it: requirements/models.txt)")
    if expect.needs == "make":
        if shutil.which("make") is None:
            pytest.skip("make is not installed")
        stamp = ".venv/.deployval-installed"  # what the Makefile's `install` makes; `make -q` asks if it is current
        if subprocess.run(["make", "-q", stamp], cwd=ROOT, capture_output=True).returncode != 0:
            pytest.skip("the .venv is not up to date: make would reinstall it first (network)")


def _fine_organs_checkpoint(path: Path) -> None:
    """An nnU-Net v1-style checkpoint of fine_organs (its state_dict under 'state_dict'), other
    weights than the seeded ones."""
    import torch

    from deployval.catalog.zoo import fine_organs

    module = fine_organs.build(seed=1)
    torch.save({"epoch": 1000, "state_dict": module.state_dict()}, path)


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("command", [_param(c) for c in COMMANDS])
def test_readme_command(command: Command, workspace: tuple[Path, Path], tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    kind, detail = disposition(command)
    if kind == "unknown":
        pytest.fail(str(detail))
    if kind == "skip":
        pytest.skip(f"{command.id}: {detail}")
    if kind == "synopsis":
        problems = synopsis_problems(command.text)
        assert not problems, f"{command.id} `{command.text}`:\n" + "\n".join(problems)
        return
    assert isinstance(detail, Expect)
    expect = detail
    _needs(expect)
    files, cache_dir = workspace
    cwd = ROOT if expect.cwd == "root" else _copy(files, tmp_path)
    if "model_final_checkpoint.model" in command.text:
        _fine_organs_checkpoint(cwd / "model_final_checkpoint.model")
    for prerequisite in expect.before:
        run_command(prerequisite, cwd, expect.columns, cache_dir, monkeypatch, capsys)
    ran = run_command(command.text, cwd, expect.columns, cache_dir, monkeypatch, capsys)
    everything = ran.out + "\n" + ran.err
    where = f"{command.id} `{command.text}` (exit code {ran.code}):\n{ran.out[-6000:]}\n{ran.err[-3000:]}"
    assert ran.code == expect.code, where
    assert "Traceback" not in everything, where
    for text in expect.shows:
        assert text in everything, f"{text!r} not in the output of {where}"
    for name in expect.files:
        assert (cwd / name).is_file(), f"{name} not written by {where}"
    shown = transcript_lines(command)
    codes = [int(m.group(1)) for line in shown for m in [re.search(r"exit code (\d+)$", line)] if m]
    assert codes in ([], [ran.code]), f"the transcript shows exit code {codes}, the run gave {ran.code}: {where}"
    if expect.exact:
        real = [normalize(line) for line in ran.out.splitlines() if line.strip()]
        assert real == [normalize(line) for line in shown], (
            f"{command.id}: the README's output differs from a real run (numbers aside); the real output, at "
            f"COLUMNS={expect.columns}:\n{ran.out}")
    else:
        real_text = " ".join(normalize(line) for line in everything.splitlines() if line.strip())
        for line in shown:
            assert normalize(line) in real_text, f"{command.id}: shown line not in the real output:\n{line}\n{where}"


SUBMODULE_EXAMPLE = (f"deployval compare {MEDIANS} --submodule entropy_bottleneck --input-shape input=1x32x1x1 "
                     "--input-range input=-5,5 --backends torch,ort")


def test_the_reproduction_line_of_the_readme_submodule_example_reproduces_it(
        workspace: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The README's sub-module example fails its ort row, and the console prints "a reproduction command
    for each failing row" (Reports): that command must give the same FAIL."""
    assert SUBMODULE_EXAMPLE in {c.text for c in COMMANDS}
    files, cache_dir = workspace
    cwd = _copy(files, tmp_path)
    ran = run_command(SUBMODULE_EXAMPLE, cwd, 10000, cache_dir, monkeypatch, capsys)
    assert ran.code == 1, ran.out + ran.err
    match = re.search(r"^reproduce ort:fp32: (deployval .*)$", ran.out, re.MULTILINE)
    assert match, ran.out
    again = run_command(match.group(1), cwd, 10000, cache_dir, monkeypatch, capsys)
    assert again.code == 1 and "FAIL" in again.out, f"`{match.group(1)}` gave exit code {again.code}:\n{again.err}"


PYTHON_BLOCKS = [block for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
                 for block in python_blocks(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())]


@pytest.mark.parametrize("code", [pytest.param(code, id=where) for where, code in PYTHON_BLOCKS])
def test_readme_python_block_imports(code: str) -> None:
    """The Python examples are not run (their models take minutes), but what they import must exist:
    each block parses, and each of its import statements runs."""
    import ast

    tree = ast.parse(code)
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    exec(compile(ast.Module(body=imports, type_ignores=[]), "<README>", "exec"), {})


def test_every_command_has_exactly_one_rule() -> None:
    """Dispositions are decided by the rules above, never by leaving a command out: every command
    extracted gets one, and every EXPECT entry is still a command of the docs (a changed example
    needs its expectation changed with it)."""
    unknown = [str(detail) for c in COMMANDS for kind, detail in [disposition(c)] if kind == "unknown"]
    assert not unknown, "\n".join(unknown)
    texts = {c.text for c in COMMANDS}
    stale = [text for text in EXPECT if text not in texts]
    assert not stale, f"EXPECT entries no command block has any more: {stale}"
    assert set(XFAIL) <= texts


def test_the_headline_example_is_checked_against_a_real_run() -> None:
    headline = next(c for c in COMMANDS if c.file == "README.md" and c.transcript)
    assert EXPECT[headline.text].exact, "the README's first transcript must be compared with a real run line for line"
    assert len(transcript_lines(headline)) >= 10


def test_normalize_keeps_what_a_run_does_not_change() -> None:
    row = "│ ort         │ fp16      │ PASS*     │ y      │ 9.09e-04 │ 1.68e-04 │ 5.81e-04 │ -    │     0.136 │ 1000 │"
    assert normalize(row) == "│ ort │ fp16 │ PASS* │ y │ # │ # │ # │ - │ # │ # │"
    assert normalize("PASS (1 reference, 4 pass, 1 skipped) exit code 0") == (
        "PASS (1 reference, 4 pass, 1 skipped) exit code 0")
    assert normalize("convs on cpu — inputs x 1x3x32x32 float32, random (seed 0)   ") == (
        "convs on cpu — inputs x 1x3x32x32 float32, random (seed 0)")
    assert normalize("(max |diff| 0.499)") == "(max |diff| #)"
    assert normalize("100% of its total rel L2; -0.65 and 1e-06.") == "# of its total rel L2; # and #."
    assert normalize("┏━━━━━┳━━┓") == "┏━┳━┓"


# --------------------------------------------------------------------------- the extractor, unit-tested

BLOCK = """\
Text with `deployval compare convs` inline is not a command.

```
$ deployval compare convs --backends torch   # a comment
convs on cpu
PASS (1 reference) exit code 0
deployval compare a \\
    --precisions fp32,fp16          # continued
make test        # the suite
deployval debug MODEL --backend ort [--json PATH]
                [--repro DIR]
                                   what it does
PYTHONPATH=tests deployval models
not a command
```

```python
python_is_not_run = "deployval compare convs"
```

```bash
OUT=/tmp/x scripts/gpu-check.sh
.venv/bin/python bench/x.py --slow
model-explorer A.onnx --flag="# not a comment"
```
"""


def test_extract_commands_reads_every_shell_block() -> None:
    commands = extract_commands(BLOCK, "X.md")
    assert [(c.line, c.text) for c in commands] == [
        (4, "deployval compare convs --backends torch"),
        (7, "deployval compare a --precisions fp32,fp16"),
        (9, "make test"),
        (10, "deployval debug MODEL --backend ort [--json PATH] [--repro DIR] what it does"),
        (13, "PYTHONPATH=tests deployval models"),
        (22, "OUT=/tmp/x scripts/gpu-check.sh"),
        (23, ".venv/bin/python bench/x.py --slow"),
        (24, 'model-explorer A.onnx --flag="# not a comment"'),
    ]
    first = commands[0]
    assert first.transcript and first.output == ("convs on cpu", "PASS (1 reference) exit code 0")
    assert first.id == "X.md:4" and not commands[1].transcript


def test_strip_comment_and_synopsis_rules() -> None:
    assert strip_comment("make bench   # bench/overhead.py") == "make bench"
    assert strip_comment("deployval debug x --modules 'a#b'") == "deployval debug x --modules 'a#b'"
    assert is_synopsis("deployval compare MODEL [--backends X]")
    assert is_synopsis("deployval report merge A.json B.json")
    assert is_synopsis("deployval compare x --device cpu|cuda")
    assert not is_synopsis("PYTHONPATH=tests deployval compare real_models:minilm --inputs minilm.npz")
    assert not is_synopsis("deployval compare model.onnx -p fp32,fp16,int8")
    assert not is_synopsis("deployval debug x --modules 'encoder.*|A'")
