"""The reference pages of the documentation, generated from the code and the files they describe
so they cannot drift: the CLI (from the argparse parser, exactly what `--help` prints), the pytest
plugin's options and markers, the tolerances (from fixtures/tolerances.toml, with the reasons
written beside each value) and the cases. `mkdocs build` calls `generate` through the hook in
scripts/docs_hooks.py wherever a page holds `<!-- generated: NAME -->`.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Callable, Iterator

HELP_WIDTH = "100"  # argparse wraps --help to $COLUMNS: fixed, so the page does not depend on the terminal
MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")


@contextlib.contextmanager
def _columns() -> Iterator[None]:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def subcommands(parser) -> dict:
    """name -> sub-parser of each `parity` command."""
    return next(a for a in parser._subparsers._group_actions if a.dest == "command").choices


def command_help(command: str = "") -> str:
    """What `parity [COMMAND] --help` prints, at the documentation's width."""
    from parity.cli import build_parser

    parser = build_parser()
    with _columns():
        return (subcommands(parser)[command] if command else parser).format_help()


def cli_reference() -> str:
    """Every command's --help, one section each."""
    from parity.cli import build_parser

    parser = build_parser()
    with _columns():
        parts = ["## parity", "", "```", parser.format_help().rstrip(), "```", ""]
        for name, sub in subcommands(parser).items():
            parts += [f"## parity {name}", "", "```", sub.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def _cell(text: str) -> str:
    """Text for a markdown table cell (a | would end the cell)."""
    return text.replace("|", "\\|")


class _Options:
    """Records the options a pytest plugin adds (pytest's parser, for what pytest_addoption calls)."""

    def __init__(self):
        self.rows: list[tuple[str, str, str]] = []

    def getgroup(self, *args, **kwargs):
        return self

    def addoption(self, *names, **kwargs):
        default = kwargs.get("default")
        shown = "—" if default in (None, False) else f"`{default}`"
        self.rows.append((", ".join(f"`{n}`" for n in names), shown, _cell(kwargs.get("help", ""))))

    addini = addoption


def plugin_reference() -> str:
    """The pytest plugin's command-line options and markers, from the plugin itself."""
    from parity.plugin import pytest_plugin

    options = _Options()
    pytest_plugin.pytest_addoption(options)
    lines = ["### Options", "", "| option | default | what it does |", "|---|---|---|"]
    lines += [f"| {names} | {default} | {text} |" for names, default, text in options.rows]
    lines += ["", "### Markers", "", "| marker | meaning |", "|---|---|"]
    lines += [f"| `@pytest.mark.{name}` | {_cell(text)} |" for name, text in pytest_plugin.MARKERS.items()]
    return "\n".join(lines) + "\n"


def tolerances_reference(path: Path | None = None) -> str:
    """fixtures/tolerances.toml as tables, one per profile, each value beside the reason written
    above it in the file; the file's header as the introduction."""
    from parity.run.tolerances import TOLERANCE_PATH

    text = Path(path or TOLERANCE_PATH).read_text()
    intro, sections, comment = [], [], []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            comment.append(line.lstrip("#").strip())
        elif line.startswith("["):
            sections.append((line.strip("[]"), comment, []))
            comment = []
        elif "=" in line and sections:
            key, value = (part.strip() for part in line.split("=", 1))
            value, _, note = (part.strip() for part in value.partition("#"))  # a calibrated bound's own measurement
            sections[-1][2].append((key.strip('"'), value, " ".join(comment) or note))
            comment = []
        elif not line and not sections:
            intro, comment = intro + comment + [""], []
    paragraphs = " ".join(line or "\n\n" for line in intro)  # an empty comment line parts paragraphs
    lines = ["\n\n".join(p.strip() for p in paragraphs.split("\n\n") if p.strip()), ""]
    for name, notes, rows in sections:
        lines += [f"## `[{name}]`", ""]
        if notes:
            lines += [" ".join(notes), ""]
        lines += ["| stage (glob) | value | reason |", "|---|---|---|"]
        lines += [f"| `{key}` | `{value}` | {_cell(reason) or '—'} |" for key, value, reason in rows]
        lines.append("")
    return "\n".join(lines)


def cases_reference() -> str:
    """What `parity cases` prints."""
    from parity.inputs.cases import format_case_table

    return "```\n" + format_case_table().rstrip() + "\n```\n"


def case_file_reference() -> str:
    """Every key of a case file: its type, its default, what it is (parity.inputs.casefile)."""
    from parity.inputs.casefile import CASE_KEYS, WEIGHT_KEYS

    kinds = {str: "string", int: "integer", bool: "boolean", dict: "table"}
    lines = ["| key | type | default | what it is |", "|---|---|---|---|"]
    for prefix, keys in (("", CASE_KEYS), ("weights.", WEIGHT_KEYS)):
        for key, (kind, default, what) in keys.items():
            value = str(default).lower() if kind is bool else repr(default)
            shown = "—" if default is None or default == {} else f"`{value}`"
            lines.append(f"| `{prefix}{key}` | {kinds[kind]} | {shown} | {_cell(what)} |")
    return "\n".join(lines) + "\n"


GENERATORS: dict[str, Callable[[], str]] = {
    "cli": cli_reference,
    "plugin": plugin_reference,
    "tolerances": tolerances_reference,
    "cases": cases_reference,
    "case-file": case_file_reference,
}


def generate(markdown: str) -> str:
    """`markdown` with every `<!-- generated: NAME -->` replaced by its generated text; an unknown
    name is a ValueError (the strict build fails on it)."""
    def one(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"no generated section {name!r} (known: {', '.join(GENERATORS)})")
        return GENERATORS[name]()

    return MARKER.sub(one, markdown)
