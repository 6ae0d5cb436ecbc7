"""What ``pip install`` puts into site-packages: only names under ``sgl_specreason``, and every
module of the repository's library, programs and evaluation among them."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the repository's folders and where the wheel installs them
INSTALLED_AS = {"sgl_specreason": "sgl_specreason", "programs": "sgl_specreason/programs",
                "eval": "sgl_specreason/eval"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The names in the project's wheel, and its top_level.txt (None if it has none)."""
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source")  # a copy: building writes build/ beside the sources
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in INSTALLED_AS:
        shutil.copytree(ROOT / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "reports", "*.jsonl"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out)], check=True, capture_output=True, text=True, timeout=300)
    [path] = out.glob("*.whl")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        top_level = next((n for n in names if n.endswith(".dist-info/top_level.txt")), None)
        return names, archive.read(top_level).decode() if top_level else None


def test_the_wheel_adds_only_the_projects_own_top_level_name(wheel):
    names, top_level = wheel
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"sgl_specreason"}
    if top_level is not None:  # what pip records as the names it added
        assert top_level.split() == ["sgl_specreason"]


def test_every_module_of_the_library_the_programs_and_the_evaluation_is_installed(wheel):
    names, _ = wheel
    expected = {f"{target}/{path.relative_to(ROOT / folder).as_posix()}"
                for folder, target in INSTALLED_AS.items() for path in (ROOT / folder).rglob("*.py")
                if (path.parent / "__init__.py").exists()}  # packages, not loose scripts
    assert expected - set(names) == set()
