"""The examples run end to end with --small on the committed crops and a tiny model, and
their outputs reopen georeferenced."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import geot2e  # noqa: E402
from geot2e.errors import CheckpointError  # noqa: E402
from engine_helpers import tiny_model_path  # noqa: E402,F401 (session fixture: one tiny model for all modules)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_model(tiny_model_path):
    """The session's seeded random tiny model (engine_helpers), as a folder path."""
    return str(tiny_model_path)


def reopen(path: Path, crs="EPSG:32621"):
    assert path.is_file(), path
    da = geot2e.io.open_raster(path)
    assert da.rio.crs == crs
    assert abs(da.rio.resolution()[0]) > 0 and da.rio.transform() is not None
    return da


def test_01_cloud_removal(tmp_path, tiny_model, capsys):
    figure = tmp_path / "img" / "before_after.png"
    assert load("01_cloud_removal").main(["--small", "--model", tiny_model, "--out", str(tmp_path),
                                          "--figure", str(figure)]) == 0
    out = capsys.readouterr().out
    assert "GSD 29.99 m" in out and "bit-identical: True" in out and "checkpoint_hash" in out
    da = reopen(tmp_path / "cloud_removal_224078.tif")
    assert da.dtype == np.uint16 and da.synthesized.any()
    assert da.attrs["geot2e_operation"] == "remove_clouds"
    assert figure.stat().st_size > 10_000


def test_01_falls_back_to_a_tiny_model_with_a_clear_note(tmp_path, monkeypatch, capsys):
    ex = load("01_cloud_removal")

    def missing(*a, **k):
        raise CheckpointError("the embedded default model is missing")

    monkeypatch.setattr(ex.geot2e, "load_model", missing)
    model, is_random = ex.resolve_model("default", tmp_path)
    assert is_random and Path(model, "config.json").is_file()
    assert "RANDOM" in capsys.readouterr().out


def test_02_vector_editing(tmp_path, tiny_model, capsys):
    assert load("02_vector_editing").main(["--small", "--model", tiny_model, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "a lake with dark blue water" in out and "bit-identical: True" in out
    da = reopen(tmp_path / "vector_edit_224078.tif")
    assert da.synthesized.any()
    assert len(da.attrs["geot2e_prompt"]) == 3
    assert (tmp_path / "vector_edit_224078.png").is_file()


def test_03_unbounded_scene(tmp_path, tiny_model, capsys):
    assert load("03_unbounded_scene").main(["--small", "--model", tiny_model, "--out", str(tmp_path)]) == 0
    assert "original pixels bit-identical: True" in capsys.readouterr().out
    start = geot2e.io.open_raster(EXAMPLES.parent / "tests" / "data" / "landsat_224078_rgb_crop.tif").isel(
        y=slice(192, 256), x=slice(192, 256))
    da = reopen(tmp_path / "unbounded_scene.tif")
    assert (da.rio.height, da.rio.width) == (64 + 32, 64 + 32)
    assert da.rio.resolution() == start.rio.resolution()
    # grown 16 px to the left and to the top: the origin moved by exactly 16 pixels
    assert da.rio.transform().c == pytest.approx(start.rio.transform().c - 16 * 30)
    assert da.rio.transform().f == pytest.approx(start.rio.transform().f + 16 * 30)
    np.testing.assert_array_equal(da.values[:, 16:80, 16:80], start.values)
    assert int(da.synthesized.sum()) == 96 * 96 - 64 * 64
    assert (tmp_path / "unbounded_scene.png").is_file()


def test_04_train_finetune(tmp_path, tiny_model, capsys):
    assert load("04_train_finetune").main(["--small", "--model", tiny_model, "--out", str(tmp_path)]) == 0
    final = tmp_path / "finetune" / "final"
    assert (final / "config.json").is_file() and (tmp_path / "finetune" / "config.yaml").is_file()
    tuned = geot2e.load_model(final)
    assert tuned.checkpoint_hash != geot2e.load_model(tiny_model).checkpoint_hash
    da = reopen(tmp_path / "finetuned_inpaint.tif", crs="EPSG:32618")
    assert da.attrs["geot2e_checkpoint_hash"] == tuned.checkpoint_hash
    assert (tmp_path / "finetuned_inpaint.png").is_file()


def test_06_translate_runs_every_task_with_the_default_models_controlnet(tmp_path, capsys):
    figure = tmp_path / "translation_tasks.png"
    assert load("06_translate").main(["--small", "--out", str(tmp_path), "--figure", str(figure)]) == 0
    out = capsys.readouterr().out
    for task, baseline in (("super_resolution", "bicubic"), ("pansharpen", "HPF"), ("nir_to_rgb", "linear regression"),
                           ("dehaze", "dark channel prior")):
        assert task in out and baseline in out
    assert figure.stat().st_size > 10_000


def test_07_modalities_runs_with_the_default_models_adapters(tmp_path, capsys):
    figure = tmp_path / "modalities.png"
    assert load("07_modalities").main(["--small", "--out", str(tmp_path), "--figure", str(figure)]) == 0
    out = capsys.readouterr().out
    assert "bands ('B02', 'B03', 'B04', 'B08')" in out and "an exact 2x refinement" in out   # like's order and names
    assert "bit-identical: True" in out
    pan = geot2e.io.open_raster(tmp_path / "pan_15m.tif")
    assert pan.attrs["geot2e_model_id"].endswith("+pan") and abs(geot2e.gsd(pan) - 15.0) < 0.1
    assert figure.stat().st_size > 10_000


def test_readme_example_is_valid_python_and_uses_committed_files():
    import ast
    import re

    readme = (EXAMPLES.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README has no Python example"
    code = blocks[0]
    assert len(code.strip().splitlines()) <= 11  # "a ten-line example" (+ the import line)
    ast.parse(code)
    for path in re.findall(r'"((?:tests|examples)/[^"]+)"', code):
        assert (EXAMPLES.parent / path).is_file(), path
    for link in re.findall(r"\]\(((?:docs|examples)/[^)#]+)\)", readme):
        if link != "docs/img/before_after.png":  # made by examples/01 with the default model
            assert (EXAMPLES.parent / link).exists(), link

