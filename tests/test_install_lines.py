"""Every install line a user is shown names extras and wheels that exist.

The package is installed from a clone (``pip install -e ".[cli]"``), not from an index, so an
extra named anywhere (README, docs/, an error message in src/) must be one of pyproject.toml's,
and the docs written for users install from the clone, never ``"twolayer-xp[...]"`` from an index.
"""

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
# twolayer-xp[a,b] (a pip requirement) or ".[a,b]" (the clone): the extras between the brackets
EXTRAS = re.compile(r'(?:twolayer-xp|")\.?\[([a-z0-9_,\- ]+)\]')
FROM_INDEX = re.compile(r'pip install "?twolayer-xp\[')


def _texts():
    paths = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").rglob("*.md")),
        *sorted((ROOT / "src").rglob("*.py")),
    ]
    return {path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8") for path in paths}


def _extras() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_every_extra_named_exists_in_pyproject():
    known = set(_extras())
    named = {
        (where, extra.strip())
        for where, text in _texts().items()
        for group in EXTRAS.findall(text)
        for extra in group.split(",")
    }
    assert named, "the README names at least one extra"
    assert {(where, extra) for where, extra in named if extra not in known} == set()


def test_cuda_fix_names_the_real_cupy_wheels():
    from twolayer_xp.backend.cupy_lib import CUPY_FIX

    wheels = {req.split(">")[0].split("=")[0] for extra in ("cuda12", "cuda13") for req in _extras()[extra]}
    assert wheels == {"cupy-cuda12x", "cupy-cuda13x"}
    assert all(f"pip install {wheel}" in CUPY_FIX for wheel in wheels), CUPY_FIX


def test_user_docs_install_from_the_clone():
    docs = {where: text for where, text in _texts().items() if where.startswith("docs/")}
    assert {where for where, text in docs.items() if FROM_INDEX.search(text)} == set()


def test_the_console_script_points_at_the_cli():
    """pyproject's [project.scripts] entry is what `twolayer-xp` runs after `pip install -e .`:
    it must name the CLI's real module (a moved module breaks the README's every command)."""
    import importlib

    target = re.search(r'^twolayer-xp = "([\w.]+):(\w+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert target, "pyproject.toml's [project.scripts] names twolayer-xp"
    module, name = target.groups()
    from twolayer_xp.app import cli

    assert getattr(importlib.import_module(module), name) is cli.main


def test_the_installed_command_runs(tmp_path):
    import shutil
    import subprocess
    import sys

    command = shutil.which("twolayer-xp", path=str(Path(sys.executable).parent))
    if command is None:
        pytest.skip("twolayer-xp is not installed beside this Python (make test installs it)")
    done = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("twolayer-xp "), done.stderr
