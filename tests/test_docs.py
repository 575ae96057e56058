"""The Python examples in README.md and docs/*.md run, in order, one namespace per page.

A block fenced as ```python (exactly) is run; use another info string (```py-norun) for one that must not be.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _pages_with_examples() -> list[Path]:
    return [page for page in PAGES if BLOCK.search(page.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("page", _pages_with_examples(), ids=lambda p: p.name)
def test_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("MESHLOG_URL", "DATABASE_URL", "PG_PRIMARY_URL", "MESHLOG_TENANT"):
        monkeypatch.delenv(name, raising=False)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for number, match in enumerate(BLOCK.finditer(page.read_text(encoding="utf-8")), start=1):
        code = compile(match.group(1), f"{page.name} (example {number})", "exec")
        exec(code, namespace)


def test_readme_opens_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:4]
    assert any(line.strip().startswith("make demo") for line in head)
    assert any(line.strip().startswith("make test") for line in head)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci
