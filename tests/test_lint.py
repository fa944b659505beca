"""The code passes ruff's pyflakes-level checks (pyproject.toml ``[tool.ruff.lint]``): no
unused imports or names, no undefined names, no syntax errors, so they stay gone."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["geot2e", "tests", "scripts", "benchmarks", "examples"]


def _ruff() -> list[str] | None:
    exe = Path(sys.executable).parent / "ruff"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("ruff")
    return [found] if found else None


def test_ruff_finds_nothing():
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    res = subprocess.run([*ruff, "check", "--no-cache", "--output-format", "concise", *PATHS], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"ruff check {' '.join(PATHS)} found:\n{res.stdout}{res.stderr}"
