"""The README and docs/: every relative link and #anchor resolves (GitHub's anchor rules), so moving a
section between pages cannot leave a dead link behind. No PostgreSQL needed."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def prose(path: Path) -> list[str]:
    """The page's lines, those inside fenced code blocks blanked."""
    out, fenced = [], False
    for line in path.read_text().split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        out.append("" if fenced or line.startswith("```") else line)
    return out


def anchors(path: Path) -> set[str]:
    seen, out = {}, set()
    for line in prose(path):
        heading = re.match(r"#{1,6} (.*)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_links_resolve():
    known = {page: anchors(page) for page in PAGES}
    broken = []
    for page in PAGES:
        for no, line in enumerate(prose(page), 1):
            for target in LINK.findall(line):
                if re.match(r"[a-z]+:", target):
                    continue
                path, _, anchor = target.partition("#")
                to = (page.parent / path).resolve() if path else page
                if not to.exists() or (anchor and anchor not in known.get(to, set())):
                    broken.append(f"{page.relative_to(ROOT)}:{no}: {target}")
    assert not broken
