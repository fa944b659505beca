"""The code in README.md and docs/*.md runs as written, and the generated reference pages are current.

Every ```` ```python ```` block of a page runs, in page order, in one namespace per page (like a
notebook), with the repository's ``tests/``, ``examples/``, ``configs/`` and ``docs/`` reachable
by the relative paths the pages use, from a scratch working directory (files the blocks write
land there). ```` ```pycon ```` blocks (doctests, e.g. the examples of docs/api.md) run through
:mod:`doctest`, their printed output compared. A block is skipped when the line before its fence
is the fragment marker ``<!-- fragment -->`` (signatures, code that needs your own files, a
cluster, a GPU or an hour of training).

So that the pages run in seconds, the embedded default model is replaced by a tiny random model
(with the default's recorded vocabulary): the code paths are the real ones, the pixels are noise.
``GEOT2E_DOCS_REAL_MODEL=1`` runs the pages with the real default model (minutes).
"""
from __future__ import annotations

import doctest
import os
import re
import shutil
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRAGMENT = "<!-- fragment -->"
PAGES = ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))

#: Pages whose unmarked blocks are not run yet, with the reason; the test lists the blocks that
#: still need a fragment marker (or a fix) and skips. Remove an entry once its page is done.
PENDING: dict[str, str] = {}

_FENCE = re.compile(r"^```(\w+)\s*$")


def blocks(text: str) -> list[dict]:
    """Fenced blocks of a Markdown page: language, code, first line number, fragment or not."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        prev = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        out.append({"lang": m.group(1), "code": "\n".join(lines[i + 1:j]) + "\n", "line": i + 1,
                    "fragment": prev == FRAGMENT})
        i = j + 1
    return out


def test_block_parser_sees_fences_and_markers():
    page = "text\n\n<!-- fragment -->\n```python\nf(*, x)\n```\n\n```python\nx = 1\n```\n```bash\nls\n```\n"
    b = blocks(page)
    assert [(x["lang"], x["fragment"], x["line"]) for x in b] == [("python", True, 4), ("python", False, 8),
                                                                  ("bash", False, 11)]
    assert b[1]["code"] == "x = 1\n"


def test_every_page_with_code_is_checked():
    for page in PAGES:
        text = (ROOT / page).read_text()
        assert "DESIGN.md" not in text, f"{page} cites a file outside the repository"
        for b in blocks(text):
            assert b["lang"] in {"python", "pycon", "bash", "text", "yaml", "toml", "json", "console", "sh"}, (
                f"{page}:{b['line']}: unknown block language {b['lang']!r}")


@pytest.fixture(scope="module")
def tiny_default(tmp_path_factory):
    if os.environ.get("GEOT2E_DOCS_REAL_MODEL") == "1":
        return None
    import torch

    from geot2e.models import Text2Earth, save_pretrained, tiny_config
    from geot2e.models.checkpoint import DEFAULT_WEIGHTS

    from geot2e.models.control import CONTROL_DIR, build_controlnet, save_controlnet

    torch.manual_seed(0)
    model = Text2Earth(tiny_config())
    path = save_pretrained(model, tmp_path_factory.mktemp("m") / "tiny-default")
    # like the real default, a translation ControlNet beside it (untrained: the pages' code paths only)
    save_controlnet(build_controlnet(model), Path(path) / CONTROL_DIR, meta={"tasks": []})
    # and modality adapters (rank 2, starting equal to the base: the pages' code paths only)
    from geot2e.models import from_pretrained
    from geot2e.models.adapter import add_lora, save_lora
    from geot2e.models.modality import MODALITIES

    for m in MODALITIES.values():
        if m.adapter:
            save_lora(add_lora(from_pretrained(path), rank=2, alpha=2), Path(path) / m.folder)
    if (DEFAULT_WEIGHTS / "vocabulary.json").is_file():
        shutil.copy(DEFAULT_WEIGHTS / "vocabulary.json", Path(path) / "vocabulary.json")
    return Path(path)


@pytest.fixture
def sandbox(tmp_path, monkeypatch, tiny_default):
    """A scratch working directory that sees the repository's data folders by their relative paths."""
    import matplotlib

    matplotlib.use("Agg")
    for name in ("tests", "examples", "configs", "docs", "notebooks"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    if tiny_default is not None:
        import geot2e.models.checkpoint as ckpt

        monkeypatch.setattr(ckpt, "DEFAULT_WEIGHTS", tiny_default)
    return tmp_path


def _api_names() -> dict:
    """The names documented in docs/api.md, for its doctests."""
    import importlib

    from script_helpers import load_script

    ns = {}
    for modname, names, *_ in load_script("gen_api_docs").SECTIONS:
        mod = importlib.import_module(modname)
        for n in names or getattr(mod, "__all__", []):
            if hasattr(mod, n):
                ns[n] = getattr(mod, n)
    return ns


def _run_page(page: str, ns: dict) -> int:
    ran = 0
    for b in blocks((ROOT / page).read_text()):
        if b["fragment"] or b["lang"] not in ("python", "pycon"):
            continue
        where = f"{page}:{b['line']}"
        if b["lang"] == "python":
            code = compile(b["code"], where, "exec")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # the tiny stand-in model is outside every trained range
                exec(code, ns)  # noqa: S102 (the repository's own documentation)
        else:
            test = doctest.DocTestParser().get_doctest(b["code"], ns, where, where, b["line"])
            runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
            runner.run(test, clear_globs=False)
            assert runner.failures == 0, f"{where}: doctest failed (see the output above)"
        ran += 1
    return ran


@pytest.mark.parametrize("page", PAGES)
def test_page_code_runs_as_written(page, sandbox):
    text = (ROOT / page).read_text()
    todo = [b for b in blocks(text) if b["lang"] in ("python", "pycon") and not b["fragment"]]
    if page in PENDING:
        lines = ", ".join(str(b["line"]) for b in todo)
        pytest.skip(f"{page}: not run yet ({PENDING[page]}); unmarked blocks at lines {lines}" if todo
                    else f"{page}: every block is marked now; remove it from PENDING")
    if not todo:
        return
    ns = {"__name__": f"docs_{Path(page).stem}"}
    if page == "docs/api.md":
        ns.update(_api_names())
    assert _run_page(page, ns) == len(todo)
    if page == "README.md":  # the ten-line example writes into its output folder only
        assert (sandbox / "outputs" / "scene.tif").is_file() and (sandbox / "outputs" / "before_after.png").is_file()
        assert [p.name for p in sandbox.iterdir() if not p.is_symlink() and p.name != "outputs"] == []


def test_generated_reference_pages_are_current():
    """docs/api.md and docs/cli.md equal what scripts/gen_api_docs.py generates now (drift check)."""
    from script_helpers import load_script

    assert load_script("gen_api_docs").main(["--check"]) == 0, "docs/api.md or docs/cli.md is out of date: run python scripts/gen_api_docs.py"


def test_nothing_cites_files_outside_the_repository():
    """Docs, docstrings, scripts and notebooks point at the repository's own pages (docs/design.md),
    never at a design file or a path that only exists on the machine they were written on."""
    bad = re.compile(r"DESIGN\.md|/work/shared|/work/main")
    found = []
    for folder, pattern in [("geot2e", "*.py"), ("scripts", "*.py"), ("benchmarks", "*.py"), ("examples", "*.py"),
                            ("notebooks", "*.ipynb"), ("docs", "*.md"), ("configs", "*")]:
        for path in sorted((ROOT / folder).rglob(pattern)):
            if path.is_file() and "dev" not in path.relative_to(ROOT).parts:
                text = path.read_text(errors="replace")
                found += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in bad.finditer(text)]
    found += [f"README.md: {m.group(0)}" for m in bad.finditer((ROOT / "README.md").read_text())]
    assert found == []
