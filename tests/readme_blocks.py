"""The commands of the README's and the docs' command blocks, for tests/test_readme.py.

`extract_commands(text, file)` reads every fenced code block (```), except blocks tagged with a
language that is not a shell's (```python, ```toml, ...), and returns each command in it with its
file and line:

- a command is a line that starts (after an optional `$ ` prompt and optional `NAME=value`
  environment assignments) with one of `PROGRAMS`: `deployval`, `make`, `python`, `pip`, `docker`,
  `model-explorer`, `ray`, and the scripts and venv executables the docs run by path;
- a line ending in `\\` continues on the next line, and so does an indented line right after a
  command that is not a transcript (a synopsis wrapped over several lines, its description lines
  included); a trailing `# comment` is dropped;
- in a transcript (a `$ ` command), the lines after the command up to the next command or the end of
  the block are its output, kept in `Command.output`.

`python_blocks(text, file)` returns the ```python blocks, whose imports the tests check.

Pure functions of the text: no files are read except by `readme_commands`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PROGRAMS = ("deployval", "make", "python", "python3", "pip", "docker", "model-explorer", "ray",
            ".venv/bin/python", ".venv/bin/deployval", "scripts/")
SHELL_LANGUAGES = ("", "bash", "sh", "shell", "console", "text")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=\S*\s+")


@dataclass(frozen=True)
class Command:
    file: str  # "README.md", "docs/precision.md"
    line: int  # the 1-based line the command starts on
    text: str  # the command, continuations joined, prompt and comment dropped
    transcript: bool = False  # shown as `$ command`, followed by its output
    output: tuple[str, ...] = ()  # a transcript's lines after the command

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def strip_comment(line: str) -> str:
    """`line` without a trailing shell comment (a `#` that starts a word outside quotes)."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def command_start(line: str) -> str | None:
    """The command a line of a block starts (prompt removed), or None when it starts none."""
    text = line.strip()
    if text.startswith("$ "):
        text = text[2:].lstrip()
    rest = text
    while (match := _ENV.match(rest)) is not None:
        rest = rest[match.end():]
    for program in PROGRAMS:
        if rest.startswith(program) and (program.endswith("/") or rest[len(program):len(program) + 1] in ("", " ")):
            return text
    return None


def _blocks(text: str, languages: tuple[str, ...] = SHELL_LANGUAGES) -> list[tuple[int, list[str]]]:
    """(line number of the first line inside, lines) of every fenced block in one of `languages`."""
    blocks: list[tuple[int, list[str]]] = []
    lines = text.split("\n")
    inside: list[str] | None = None
    start = 0
    keep = False
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if inside is None and stripped.startswith("```"):
            inside, start = [], number + 1
            keep = stripped[3:].strip().lower() in languages
        elif inside is not None and stripped.startswith("```"):
            if keep:
                blocks.append((start, inside))
            inside = None
        elif inside is not None:
            inside.append(line)
    return blocks


def extract_commands(text: str, file: str) -> list[Command]:
    """Every command of the fenced shell blocks of one Markdown text (see the module docstring)."""
    commands: list[Command] = []
    for start, lines in _blocks(text):
        i = 0
        while i < len(lines):
            line = lines[i]
            text_start = command_start(line)
            if text_start is None:
                i += 1
                continue
            transcript = line.strip().startswith("$ ")
            number = start + i
            parts = [strip_comment(text_start)]
            i += 1
            while i < len(lines):
                if parts[-1].endswith("\\"):
                    parts[-1] = parts[-1][:-1].rstrip()
                    parts.append(strip_comment(lines[i]).strip())
                    i += 1
                elif (not transcript and lines[i][:1].isspace() and lines[i].strip()
                      and command_start(lines[i]) is None):
                    parts.append(strip_comment(lines[i]).strip())
                    i += 1
                else:
                    break
            output: list[str] = []
            if transcript:
                while i < len(lines) and command_start(lines[i]) is None:
                    output.append(lines[i])
                    i += 1
            joined = " ".join(p for p in parts if p)
            commands.append(Command(file, number, joined, transcript, tuple(output)))
    return commands


def python_blocks(text: str, file: str) -> list[tuple[str, str]]:
    """(`file:line`, code) of every ```python block of one Markdown text."""
    return [(f"{file}:{start}", "\n".join(lines)) for start, lines in _blocks(text, ("python",))]


def readme_commands(root: Path) -> list[Command]:
    """The commands of README.md and docs/*.md under `root`, in file and line order."""
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    commands: list[Command] = []
    for path in files:
        commands.extend(extract_commands(path.read_text(encoding="utf-8"), path.relative_to(root).as_posix()))
    return commands
