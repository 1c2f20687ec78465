"""The repository stands alone: code and docs cite its own docs/, never a file users lack."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"DESIGN\.md|\.\./shared")


@pytest.mark.timeout(30)
def test_no_citation_of_files_outside_the_repository():
    files = [p for top in ("src", "workflow", "docs", "bench", "configs") for p in (REPO / top).rglob("*")
             if p.is_file() and p.suffix in {".py", ".smk", ".md", ".yaml", ".sh"}]
    files += [REPO / "README.md", REPO / "config.yaml", REPO / "Snakefile"]
    assert len(files) > 40  # the globs found the tree
    hits = [f"{p.relative_to(REPO)}:{i}" for p in files
            for i, line in enumerate(p.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert hits == []


@pytest.mark.timeout(30)
def test_docs_cited_by_the_code_exist():
    cited = set()
    for p in list((REPO / "src").rglob("*.py")) + list((REPO / "workflow").rglob("*.smk")):
        cited.update(re.findall(r"docs/([\w.-]+\.md)", p.read_text()))
    assert {"benchmark.md", "transformers-notes.md"} <= cited
    assert sorted(c for c in cited if not (REPO / "docs" / c).is_file()) == []
