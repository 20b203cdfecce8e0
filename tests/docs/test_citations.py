"""Code and user-facing docs cite the project's own docs: never the internal science notes,
and every ``docs/<file>.md#anchor`` (or relative ``file.md#anchor`` link inside docs/) names
a heading that exists, with GitHub's heading anchors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED_DIRS = ("service", "workers", "api_schemas", "bench", "docs")
TEXT_SUFFIXES = {".py", ".md", ".html", ".js", ".css", ".toml", ".txt", ".yaml", ".yml", ".ini"}
FORBIDDEN = "science" + ".md"  # spelled in two parts so this file does not cite it either

DOC_REFERENCE = re.compile(r"docs/([\w./-]+?\.md)#([\w-]+)")
RELATIVE_LINK = re.compile(r"\]\(([\w./-]*?\.md)?#([^)\s]+)\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")


def scanned_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for name in SCANNED_DIRS:
        files += sorted(
            p
            for p in (ROOT / name).rglob("*")
            if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts
        )
    return files


def github_anchor(heading: str) -> str:
    """GitHub's slug: markdown emphasis/code marks and punctuation dropped (letters, digits,
    ``_`` and ``-`` of any script kept), lower-cased, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a markdown text; repeated headings get -1, -2, … as on GitHub."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in markdown.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else HEADING.match(line)
        if match is None:
            continue
        slug = github_anchor(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def references(path: Path, text: str) -> list[tuple[Path, str]]:
    """(target markdown file, anchor) for each anchored reference to a doc in ``text``."""
    refs = [(ROOT / "docs" / doc, anchor) for doc, anchor in DOC_REFERENCE.findall(text)]
    if path.suffix == ".md":
        for doc, anchor in RELATIVE_LINK.findall(text):
            refs.append(((path.parent / doc) if doc else path, anchor))
    return refs


def test_the_slug_follows_github() -> None:
    assert github_anchor("The identity s ≈ αγ and its bound") == "the-identity-s--αγ-and-its-bound"
    assert github_anchor("`fits.ols`: one line, 2 fits") == "fitsols-one-line-2-fits"
    assert anchors("# A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1"}


def test_no_file_cites_the_internal_science_notes() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in scanned_files()
        if FORBIDDEN in p.read_text(encoding="utf-8", errors="replace")
    ]
    assert offenders == []


@pytest.mark.parametrize("path", scanned_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_doc_anchor_names_a_heading(path: Path) -> None:
    text = path.read_text(encoding="utf-8", errors="replace")
    broken = []
    for target, anchor in references(path, text):
        if not target.is_file():
            broken.append(f"{target.relative_to(ROOT)} (no such file)")
        elif anchor not in anchors(target.read_text(encoding="utf-8")):
            broken.append(f"{target.relative_to(ROOT)}#{anchor}")
    assert broken == []
