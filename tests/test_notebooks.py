"""The notebooks under notebooks/ run top to bottom in their small mode, and make their figures.

Each notebook is executed in a fresh Jupyter kernel (nbclient, through scripts/run_notebooks.py,
which users run for the full mode) with GEOT2E_NOTEBOOK_SMALL=1
(small crops, 2 denoising steps), a tiny random model (GEOT2E_NOTEBOOK_MODEL) and an output
folder of its own (GEOT2E_NOTEBOOK_OUT), two notebooks at a time. A cell that raises fails the
test with the cell's traceback. The committed notebooks carry no outputs; the executed copies
must show figures (image/png outputs) and write the files listed below.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from engine_helpers import tiny_model_path  # noqa: F401 (session fixture: one tiny model for all modules)

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

#: notebook -> (files it must write into its output folder, least number of figures shown)
EXPECTED = {
    "01_real_clouds.ipynb": (["pensacola_filled.tif", "01_clouds_and_mask.png", "01_before_after.png",
                              "01_crops_1to1.png", "01_simulated_vs_classical.png"], 4),
    "02_vector_editing.ipynb": (["vector_edit_224078.tif", "02_prompt_map.png", "02_edited.png"], 2),
    "03_unbounded_scene.ipynb": (["unbounded_scene.tif", "03_unbounded_grid.png", "03_unbounded_compare.png"], 2),
    "04_train_finetune.ipynb": (["finetune/config.yaml", "finetune/final/config.json", "04_loss_curve.png",
                                 "finetuned_inpaint.tif", "04_finetuned_inpaint.png"], 2),
    "05_model_vs_classical.ipynb": (["05_heldout_1to1.png"], 1),
    "06_translation.ipynb": (["sr_x2.tif", "06_translation.png"], 1),
    "07_bands_and_modalities.ipynb": (["s2_six_bands_filled.tif", "pan_15m.tif", "07_ndvi_before_after_truth.png",
                                       "07_modalities.png"], 2),
}


@pytest.fixture(scope="module")
def tiny_model(tiny_model_path):
    """The session's seeded random tiny model (engine_helpers), as a folder path."""
    return str(tiny_model_path)


def _figures(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.outputs)


def test_every_notebook_is_listed_and_committed_without_outputs():
    found = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert found == sorted(EXPECTED)
    for name in found:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name} has outputs; clear them"
        params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and "GEOT2E_NOTEBOOK_SMALL" in params[0].source, name
        assert "%matplotlib inline" in "".join(c.source for c in code), name


def test_readme_links_every_notebook():
    readme = (ROOT / "README.md").read_text()
    for name in EXPECTED:
        assert f"](notebooks/{name})" in readme, name


@pytest.fixture(scope="module")
def executed(request, tiny_model, tmp_path_factory):
    """The selected notebooks, run in small mode two at a time, each in its own fresh kernel: the
    suite runs single-threaded (OMP_NUM_THREADS=1), so two kernels use two cores side by side.
    ``executed(name)`` waits for that notebook and returns (executed notebook, output folder);
    a cell that raised re-raises there, with the cell's traceback."""
    from concurrent.futures import ThreadPoolExecutor

    from script_helpers import load_script

    run = load_script("run_notebooks")
    names = [it.callspec.params["name"] for it in request.session.items
             if it.module is request.module and "name" in getattr(getattr(it, "callspec", None), "params", {})]
    root = tmp_path_factory.mktemp("notebooks")
    params = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}

    def one(name):  # timeout: seconds per cell, a hang bound (one small-mode cell took 284 s on a starved machine)
        out = root / Path(name).stem / "out"
        return run.execute(NOTEBOOKS / name, out=out, small=True, model=tiny_model, timeout=1200, params=params), out

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(one, name) for name in dict.fromkeys(names)}
        yield lambda name: futures[name].result()
        for f in futures.values():
            f.cancel()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_in_small_mode(name, executed):
    nb, out = executed(name)
    files, figures = EXPECTED[name]
    for f in files:
        assert (out / f).is_file(), f"{name} did not write {f}"
        if f.endswith(".png"):
            assert (out / f).stat().st_size > 2000, f
    assert _figures(nb) >= figures, f"{name} showed {_figures(nb)} figures, expected {figures}"
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "small mode: True" in text
    if name in ("01_real_clouds.ipynb", "02_vector_editing.ipynb"):
        assert re.search(r"bit-identical: True", text), "pixels outside the mask changed"
