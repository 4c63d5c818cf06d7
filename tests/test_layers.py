"""The package's structure: layers that import one way (import-linter), a README tree that names
every module, a light ``import twolayer_xp``, and functions short enough to read."""

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "twolayer_xp"
MAX_FUNCTION_LINES = 50


def test_import_linter_contracts_are_kept():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "import-linter is part of the test extra"
    done = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_an_upward_import_breaks_a_contract(tmp_path):
    """The contracts can fail: a copy of the package whose io imports core is refused."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "twolayer_xp", ignore=shutil.ignore_patterns("__pycache__"))
    files = copy / "twolayer_xp" / "io" / "files.py"
    files.write_text(files.read_text() + "\nfrom twolayer_xp.core import kernels  # noqa\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    done = subprocess.run(
        [lint, "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode != 0
    assert "twolayer_xp.io.files -> twolayer_xp.core.kernels" in done.stdout


def _modules() -> list[str]:
    """Every module and subpackage of src/twolayer_xp, as paths relative to it."""
    found = []
    for path in sorted(PACKAGE.rglob("*")):
        if "__pycache__" in path.parts:
            continue
        if path.is_dir() or (path.suffix == ".py" and path.name not in ("__init__.py", "__main__.py")):
            found.append(path.relative_to(PACKAGE).as_posix())
    return found


def test_the_readme_tree_names_every_module():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Development") :]
    tree = section[section.index("```") + 3 :]
    tree = tree[: tree.index("```")]
    # an indented name (two spaces a level) followed by a description: rebuild each path
    listed, stack = set(), []
    for line in tree.splitlines():
        m = re.match(r"^( +)(\S+)\s{2,}\S", line)
        if not m:
            continue
        depth = len(m.group(1)) // 2 - 1
        stack[depth:] = [m.group(2).rstrip("/")]
        listed.add("/".join(stack))
    missing = [module for module in _modules() if module.removesuffix("/") not in listed]
    assert not missing, f"README's Development tree lacks {missing}"
    stale = [name for name in listed if not (PACKAGE / name).exists()]
    assert not stale, f"README's Development tree names modules that do not exist: {stale}"


def test_import_twolayer_xp_loads_no_array_library_and_nothing_of_the_application():
    code = (
        "import sys, twolayer_xp; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('cupy', 'torch', 'array_api_strict', 'sklearn', 'scipy', 'matplotlib', 'optuna') "
        "or m.startswith('twolayer_xp.app'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == ""
    code = "import sys; from twolayer_xp import TwoLayerNet; print(sorted(m for m in sys.modules if m.startswith('twolayer_xp.app')))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def _long_functions() -> list[str]:
    long = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                if length > MAX_FUNCTION_LINES and "Long because" not in doc:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.name} ({length} lines)")
    return long


def test_no_function_is_long_unless_its_docstring_says_why():
    assert _long_functions() == []
