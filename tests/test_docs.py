"""What the docs promise about themselves: a README short enough to read, and code samples that
import what is installed."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_stays_under_12_kb():
    assert len((ROOT / "README.md").read_bytes()) <= 12 * 1024


def test_docs_import_the_programs_by_their_installed_name():
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from|import) (programs|eval)\b", text, re.M), path
