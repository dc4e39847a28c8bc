"""The front door and the documentation hold together: every relative link (and #anchor) in
README.md and docs/*.md leads to a file and heading that exist, the README stays short, names the
paper, links no image by a relative path, and its commands table names exactly the subcommands the
real ``lrtui`` command has."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS, ROOT / "sample_runs" / "README.md", ROOT / "CHANGELOG.md"]
PAPER = "https://arxiv.org/abs/2410.22113"
MAX_README_LINES = 250

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
LINK = re.compile(r"(!?)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The text without fenced blocks and code spans (a link inside them is not a link)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(path: Path) -> list[tuple[bool, str]]:
    """(is an image, target) of every Markdown link in ``path``'s prose."""
    return [(bang == "!", target) for bang, target in LINK.findall(_prose(path.read_text()))]


def slug(heading: str) -> str:
    """The anchor GitHub (and most renderers) give a heading: lower case, punctuation dropped,
    spaces to hyphens; code spans and link syntax keep only their text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def _external(target: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*:", target) is not None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for _, target in links(page):
        if _external(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_link_checker_sees_broken_links(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# A `code` title: here\n\n## Twice\n\n## Twice\n")
    page.write_text("[ok](other.md#a-code-title-here) [ok](other.md#twice-1) [bad](missing.md)\n"
                    "[bad](other.md#nowhere) ![img](pic.svg) `[not a link](gone.md)`\n"
                    "```\n[not a link](gone.md)\n```\n[web](https://example.org/x)\n")
    assert links(page) == [(False, "other.md#a-code-title-here"), (False, "other.md#twice-1"),
                           (False, "missing.md"), (False, "other.md#nowhere"), (True, "pic.svg"),
                           (False, "https://example.org/x")]
    assert anchors(tmp_path / "other.md") == {"a-code-title-here", "twice", "twice-1"}


def test_readme_is_short() -> None:
    lines = README.read_text().count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines (at most {MAX_README_LINES}: reference goes to docs/)"


def test_readme_names_the_paper_before_anything_else() -> None:
    text = README.read_text()
    intro = text[: text.index("\n## ")]
    assert PAPER in [target for _, target in links(README)], f"README.md does not link the paper ({PAPER})"
    assert PAPER in intro, "the paper is named after the introduction"


def test_readme_links_no_image_by_a_relative_path() -> None:
    # The package index shows the README without the repository: relative images break there.
    relative = [t for image, t in links(README) if image and not t.startswith("https://")]
    assert not relative, f"README.md images by relative path: {relative}"


def _table_commands() -> list[list[str]]:
    """The subcommand words of every ``lrtui ...`` in the first column of the README's commands
    table: ``lrtui import csv FILE RUN_DIR`` gives ``["import", "csv"]``."""
    text = README.read_text()
    start = text.index("## The `lrtui` command")
    section = text[start: text.index("\n## ", start + 1)].replace("\\|", "\x00")  # an escaped | is no cell end
    commands = []
    for row in re.findall(r"^\|(.*?)\|", section, re.M):
        for span in re.findall(r"`(lrtui [^`]*)`", row):
            words = []
            for word in span.split()[1:]:
                if not re.fullmatch(r"[a-z][a-z0-9-]*", word):
                    break
                words.append(word)
            commands.append(words)
    return commands


def _real_subcommands() -> set[str]:
    import argparse

    from lrtui.cli import build_parser

    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return set(actions[0].choices)


def test_commands_table_names_every_real_subcommand_and_no_other() -> None:
    table = _table_commands()
    assert table and all(table), f"a row of the commands table names no subcommand: {table}"
    named = {words[0] for words in table}
    real = _real_subcommands()
    assert named == real, f"in the table, not in lrtui: {sorted(named - real)}; in lrtui, not in the table: {sorted(real - named)}"
    for words in table:
        proc = subprocess.run([sys.executable, "-m", "lrtui", *words, "--help"], capture_output=True, text=True,
                              timeout=120, cwd=ROOT)
        assert proc.returncode == 0, f"lrtui {' '.join(words)} --help: exit {proc.returncode}: {proc.stderr.strip()}"
        assert proc.stdout.startswith(f"usage: lrtui {' '.join(words)}"), proc.stdout[:200]
