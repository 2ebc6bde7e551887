"""Write one benchmark's section of ``bench/RESULTS.md``, leaving the other sections alone."""

from __future__ import annotations

import re
import sys
from pathlib import Path

TITLE = "# Benchmark results\n"


def replace_section(document: str, heading: str, text: str) -> str:
    """``document`` with the section that starts at the line ``heading`` (up to the next
    ``## `` heading) replaced by ``text``; ``text`` is appended when there is no such section."""
    pattern = re.compile(rf"^{re.escape(heading)}\n(?:(?!## ).*\n?)*", re.MULTILINE)
    block = text.rstrip("\n") + "\n"
    if pattern.search(document):
        return pattern.sub(lambda match: block + ("\n" if match.end() < len(document) else ""), document, count=1)
    return document.rstrip("\n") + "\n\n" + block


def write_section(path: Path, heading: str, text: str) -> None:
    existing = path.read_text() if path.exists() else TITLE
    path.write_text(replace_section(existing, heading, text))


def command_line(script: str, argv: list[str] | None) -> str:
    """How the benchmark ``script`` was run, for the results: ``argv``, else this process's."""
    return f"python bench/{script}" + "".join(f" {arg}" for arg in (argv or sys.argv[1:]))
