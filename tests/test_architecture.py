"""The dependency rule of DESIGN.md: the four cores import no Flask, SQLAlchemy or dtx_trials."""

import subprocess
import sys

import pytest

CORES = ["ecrf", "randomization", "protocols", "analysis"]
FORBIDDEN = {"flask", "sqlalchemy", "dtx_trials", "flask_smorest", "marshmallow"}
# Which core may import which other core (DESIGN.md "Dependency rule").
ALLOWED = {
    "ecrf": set(),
    "randomization": set(),
    "protocols": {"ecrf", "randomization"},
    "analysis": {"protocols", "ecrf", "randomization"},
}


def _modules_after_import(package: str) -> set[str]:
    code = (
        "import importlib, pkgutil, sys\n"
        f"pkg = importlib.import_module({package!r})\n"
        "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "    importlib.import_module(m.name)\n"
        "print('\\n'.join(sorted({n.split('.')[0] for n in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return set(out.split())


@pytest.mark.parametrize("package", CORES)
def test_core_imports_no_shell(package: str) -> None:
    loaded = _modules_after_import(package)
    assert not FORBIDDEN & loaded, f"{package} pulls in {sorted(FORBIDDEN & loaded)}"


@pytest.mark.parametrize("package", CORES)
def test_core_respects_dependency_direction(package: str) -> None:
    loaded = _modules_after_import(package)
    others = (set(CORES) - {package}) & loaded
    assert others <= ALLOWED[package], f"{package} imports {sorted(others - ALLOWED[package])}"


def test_the_top_level_is_fixed() -> None:
    """DESIGN.md's fixed top level: nothing else is tracked at the repository root."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked, "not a git checkout"
    allowed = {
        "dtx_trials", "protocols", "randomization", "ecrf", "analysis", "migrations", "tests",
        "setup.cfg", "README.md", "Makefile", "pyproject.toml", "bench", ".ci", ".gitignore",
    }
    assert {path.split("/", 1)[0] for path in tracked} <= allowed
