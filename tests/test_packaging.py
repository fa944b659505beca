"""environment.yml (conda-forge) and pyproject.toml declare the same dependencies."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: conda-forge name -> PyPI name, where they differ
CONDA_TO_PYPI = {"pytorch": "torch", "dask-core": "dask", "py-opencv": "opencv-python-headless"}
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def normalize(name: str) -> str:
    """PEP 503 name normalisation (lower case, runs of -_. become -)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(req: str) -> tuple[str, str]:
    """``"dask[array]>=2024.1"`` -> ``("dask", ">=2024.1")`` with specifiers sorted."""
    m = _REQ.match(req.split(";")[0])
    assert m, f"cannot parse requirement {req!r}"
    spec = ",".join(sorted(s.strip().replace(" ", "") for s in m.group(3).split(",") if s.strip()))
    return normalize(m.group(1)), spec


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + list(project.get("optional-dependencies", {}).get("dev", []))
    out = dict(parse(r) for r in reqs)
    out["python"] = ",".join(sorted(project["requires-python"].replace(" ", "").split(",")))
    return out


def environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):  # a pip: section
            out.update(parse(r) for r in dep.get("pip", []))
            continue
        name, spec = parse(dep)
        if name == "pip":
            continue
        out[normalize(CONDA_TO_PYPI.get(name, name))] = spec
    return out


def test_same_dependency_names():
    py, env = pyproject_requirements(), environment_requirements()
    assert sorted(set(py) - set(env)) == [], "in pyproject.toml but not in environment.yml"
    assert sorted(set(env) - set(py)) == [], "in environment.yml but not in pyproject.toml"


def test_same_version_constraints():
    py, env = pyproject_requirements(), environment_requirements()
    differ = {k: (py[k], env[k]) for k in py if k in env and py[k] != env[k]}
    assert differ == {}, "version constraints differ (pyproject, environment.yml)"


def test_parser_normalises_names():
    assert parse("dask[array]>=2024.1") == ("dask", ">=2024.1")
    assert parse("open_clip_torch>=2.24") == parse("open-clip-torch >= 2.24")
    assert parse("torch<=2.14.1,>=2.2") == ("torch", "<=2.14.1,>=2.2")
