"""The docs inside the repository: every citation of them in the code resolves.

Docstrings and comments cite ``docs/math.md §N`` (a section number, several as ``§2, §3`` or a
range ``§3–4``), ``docs/design.md "Heading"`` and ``(docs/design.md, the heading's words)``. Each
cited file must exist and each cited section must be a heading of it; no citation of the team's old notes (a bare ``MATH.md`` / ``DESIGN.md``)
may remain, since a user of the package does not have them. The pages ship with the package.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CITING = ["flowcore", "objectives", "csrc", "configs", "benchmarks", "docs", "README.md"]
SUFFIXES = {".py", ".cpp", ".cu", ".h", ".cuh", ".toml", ".md", ".sh"}

# `docs/name.md`, then optionally sections: `§2`, `§2, §4`, `§3–4`, `§1-3`, or a quoted heading.
CITATION = re.compile(r'docs/(?P<file>[\w.-]+?\.md)(?P<rest>(?:[ ,;]*(?:§\d+(?:[–-]\d+)?|"[^"\n]+"))*)')
SECTION = re.compile(r"§(\d+)(?:[–-](\d+))?")
QUOTED = re.compile(r'"([^"\n]+)"')
# `(docs/design.md, the network protocol)`: a section named in words, up to `)`, `;`, `:` or `.`.
NAMED = re.compile(r"docs/(?P<file>[\w.-]+?\.md), (?:the )?(?P<name>[A-Za-z][\w -]*?)\s*(?:[);:.]|$)")
OLD_NOTE = re.compile(r"(?<![\w/.-])(?:MATH|DESIGN)\.md")


def _files() -> list[Path]:
    found = []
    for name in CITING:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        found += [p for p in candidates if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts]
    return found


def _citations() -> list[tuple[str, str, str]]:
    """(where, file, what it cites in it) of every docs citation in the citing files: the sections
    part (``§2, §4``, ``"Heading"``) or, for the words form, the heading's words in quotes."""
    found = []
    for path in _files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{number}"
            found += [(where, match["file"], match["rest"]) for match in CITATION.finditer(line)]
            found += [(where, match["file"], f'"{match["name"]}"') for match in NAMED.finditer(line)]
    return found


def _headings(name: str) -> list[str]:
    return [line.lstrip("#").strip() for line in (DOCS / name).read_text().splitlines() if line.startswith("#")]


def _section_numbers(rest: str) -> list[int]:
    numbers = []
    for match in SECTION.finditer(rest):
        first, last = int(match[1]), int(match[2] or match[1])
        numbers += list(range(first, last + 1))
    return numbers


def test_the_docs_exist_and_math_has_its_six_sections():
    assert (DOCS / "math.md").is_file() and (DOCS / "design.md").is_file()
    numbered = [int(m[1]) for h in _headings("math.md") if (m := re.match(r"§(\d+)\b", h))]
    assert numbered == [1, 2, 3, 4, 5, 6], f"docs/math.md's numbered sections are {numbered}"


def test_the_citation_parser_reads_every_form():
    text = 'see docs/math.md §2, §4 and docs/math.md §3–4; docs/design.md "The language"; docs/math.md §1.'
    got = [(m["file"], _section_numbers(m["rest"]), QUOTED.findall(m["rest"])) for m in CITATION.finditer(text)]
    assert got == [("math.md", [2, 4], []), ("math.md", [3, 4], []), ("design.md", [], ["The language"]),
                   ("math.md", [1], [])]
    named = [(m["file"], m["name"]) for m in NAMED.finditer(
        "(docs/design.md, the network protocol; …) (docs/design.md, Backends): (docs/math.md §2, LSD)")]
    assert named == [("design.md", "network protocol"), ("design.md", "Backends")]
    assert OLD_NOTE.search("(MATH.md §2)") and OLD_NOTE.search('DESIGN.md "The language"')
    assert not OLD_NOTE.search("docs/math.md §2") and not OLD_NOTE.search("benchmarks/README.md")


def test_the_code_cites_the_docs():
    # A guard for the scan itself: an empty scan would pass every test below.
    cited = {file for _, file, _ in _citations()}
    assert {"math.md", "design.md"} <= cited, f"cited docs: {sorted(cited)}"


@pytest.mark.parametrize("where, file, rest", _citations(), ids=lambda value: str(value)[:60])
def test_every_citation_resolves(where, file, rest):
    assert (DOCS / file).is_file(), f"{where}: cites docs/{file}, which does not exist"
    headings = _headings(file)
    for number in _section_numbers(rest):
        assert any(re.match(rf"§{number}\b", h) for h in headings), \
            f"{where}: cites docs/{file} §{number}, which has no such section"
    for title in QUOTED.findall(rest):
        assert any(title.lower() in h.lower() for h in headings), \
            f"{where}: cites docs/{file} \"{title}\", which has no such heading"


def test_no_citation_of_the_old_notes_remains():
    stale = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in _files()
             for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if OLD_NOTE.search(line)]
    assert not stale, f"{len(stale)} lines cite MATH.md / DESIGN.md instead of docs/:\n" + "\n".join(stale)


def test_the_docs_ship_with_the_package():
    setup = (ROOT / "setup.py").read_text()
    assert '"flowcore.docs": "docs"' in setup and '"flowcore.docs": ["*.md"]' in setup
