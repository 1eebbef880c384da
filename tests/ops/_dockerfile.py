"""A small Dockerfile reader and .dockerignore matcher, for checks that need no Docker engine.

Covers what our Dockerfile uses: parser directives, comments (also inside continuations), line
continuations, ARG defaults with ${VAR} substitution, COPY/ADD flags and the JSON form.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip


class DockerfileError(ValueError):
    pass


@dataclass
class Instruction:
    cmd: str  # upper case
    args: str  # the rest, continuations joined
    line: int  # 1-based line of the instruction
    flags: dict[str, str] = field(default_factory=dict)  # --chown=..., --from=...


def parse(text: str) -> list[Instruction]:
    lines = text.splitlines()
    escape = "\\"
    i = 0
    while i < len(lines) and (m := re.match(r"#\s*(\w+)\s*=\s*(\S+)\s*$", lines[i])):  # parser directives
        if m.group(1).lower() == "escape":
            escape = m.group(2)
        i += 1
    out: list[Instruction] = []
    while i < len(lines):
        raw = lines[i]
        start = i + 1
        i += 1
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        parts = [raw]
        while parts[-1].rstrip().endswith(escape):
            parts[-1] = parts[-1].rstrip()[: -len(escape)]
            while i < len(lines) and lines[i].lstrip().startswith("#"):  # comments inside are dropped
                i += 1
            if i >= len(lines):
                raise DockerfileError(f"line {start}: continuation at the end of the file")
            parts.append(lines[i])
            i += 1
        joined = " ".join(p.strip() for p in parts)
        word, _, rest = joined.partition(" ")
        cmd = word.upper()
        if cmd not in INSTRUCTIONS:
            raise DockerfileError(f"line {start}: unknown instruction {word!r}")
        rest = rest.strip()
        flags: dict[str, str] = {}
        if cmd in ("COPY", "ADD", "RUN", "FROM"):
            while m := re.match(r"--([\w-]+)(?:=(\S*))?\s*", rest):
                flags[m.group(1)] = m.group(2) or ""
                rest = rest[m.end() :]
        out.append(Instruction(cmd, rest, start, flags))
    if not any(ins.cmd == "FROM" for ins in out):
        raise DockerfileError("no FROM instruction")
    first = next(ins for ins in out if ins.cmd != "ARG")
    if first.cmd != "FROM":
        raise DockerfileError(f"line {first.line}: only ARG may come before the first FROM")
    return out


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    """ARG NAME=default, over all stages (names are unique in our Dockerfile)."""
    out = {}
    for ins in instructions:
        if ins.cmd == "ARG":
            name, _, default = ins.args.partition("=")
            out[name.strip()] = default.strip().strip('"')
    return out


def substitute(s: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), s)


def copy_sources(ins: Instruction) -> list[str]:
    """The sources of a COPY/ADD (the last word is the destination)."""
    words = json.loads(ins.args) if ins.args.startswith("[") else shlex.split(ins.args)
    if len(words) < 2:
        raise DockerfileError(f"line {ins.line}: {ins.cmd} needs a source and a destination")
    return words[:-1]


# --- .dockerignore ----------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + "$")


def read_dockerignore(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.strip().lstrip("/").rstrip("/")
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def is_ignored(rel_path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a folder covers its contents."""
    parts = rel_path.strip("/").split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    ignored = False
    for negate, rx in rules:
        if any(rx.match(p) for p in prefixes):
            ignored = not negate
    return ignored
