"""Masks from geometries, and prompt maps: each polygon filled with its own prompt."""
from __future__ import annotations

import geopandas as gpd
import pandas as pd
import numpy as np
import pytest
import shapely

from engine_helpers import FAST, InpaintSpy, one_torch_thread, tiny_model, tiny_model_path  # noqa: F401
from geot2e.api import inpaint
from geot2e.errors import GeometryCRSError
from geot2e.geo import geometry_mask, prompt_map

# constant model outputs per prompt (model space), so every pixel tells which prompt made it
FILL = {"water": -0.8, "crop": -0.2, "tree": 0.3, "developed": 0.9}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def polygons(polygons_path, landsat_da):
    """The real polygons that fall on the crop (water, crop) plus two boxes on it, the
    second overlapping the first box (later rows win)."""
    gdf = gpd.read_file(polygons_path)
    l, b, r, t = landsat_da.rio.bounds()
    gdf = gdf[gdf.intersects(shapely.box(l, b, r, t))]
    x0, y0 = float(landsat_da.x[300]), float(landsat_da.y[300])
    boxes = gpd.GeoDataFrame({"name": ["tree", "developed"]}, crs=gdf.crs, geometry=[
        shapely.box(x0, y0, x0 + 40 * 30, y0 + 30 * 30), shapely.box(x0 + 30 * 30, y0 - 10 * 30, x0 + 60 * 30,
                                                                     y0 + 10 * 30)])
    out = gpd.GeoDataFrame(pd.concat([gdf, boxes], ignore_index=True), crs=gdf.crs)
    assert len(out) == 4
    return out


def test_prompt_column_fills_each_polygon_with_its_prompt(landsat_da, polygons, tiny_model, monkeypatch):
    spy = InpaintSpy(tiny_model, fill=FILL)
    monkeypatch.setattr(tiny_model, "inpaint", spy)
    out = inpaint(landsat_da, polygons, prompt_column="name", model=tiny_model, **FAST)
    labels, prompts = prompt_map(polygons, "name", landsat_da)
    assert sorted(prompts) == sorted(FILL)
    assert out.attrs["geot2e_prompt"] == prompts
    # every prompt reached the model, and only those prompts
    assert {c["prompts"] for c in spy.calls} == set(prompts)
    rad = out.attrs["geot2e_radiometry"]
    lo, hi = np.array(rad["lo"]), np.array(rad["hi"])
    lab = labels.values
    for k, p in enumerate(prompts, start=1):
        expected = np.clip(np.round((np.float64(np.float32(FILL[p])) + 1) * (hi - lo) / 2 + lo), 1, 65535).astype(np.uint16)
        px = out.values[:, lab == k]
        assert px.shape[1] > 100
        assert (px == expected[:, None]).all(), p
    m = lab > 0
    assert np.array_equal(out.values[:, ~m], landsat_da.values[:, ~m])
    np.testing.assert_array_equal(out["synthesized"].values, m)


def test_geometries_in_another_crs_and_a_vector_file(landsat_da, polygons, polygons_path, tiny_model, tmp_path):
    da = landsat_da.isel(y=slice(0, 128), x=slice(0, 128))
    x0, y0 = float(da.x[40]), float(da.y[40])
    box = shapely.box(x0, y0 - 30 * 30, x0 + 30 * 30, y0)
    gdf = gpd.GeoDataFrame(geometry=[box], crs=da.rio.crs).to_crs("EPSG:4326")
    out = inpaint(da, gdf, model=tiny_model, **FAST)
    expected = geometry_mask(gdf, like=da).values
    np.testing.assert_array_equal(out["synthesized"].values, expected)
    assert expected.sum() > 800
    assert np.array_equal(out.values[:, ~expected], da.values[:, ~expected])
    path = tmp_path / "box.geojson"
    gdf.to_file(path)
    out2 = inpaint(da, path, model=tiny_model, **FAST)
    assert np.array_equal(out2.values, out.values)
    with pytest.raises(GeometryCRSError):  # a bare geometry has no CRS: say which one it is in
        inpaint(da, box, model=tiny_model, **FAST)


def test_prompt_as_a_column_name_still_works_but_says_prompt_column(landsat_da, polygons, tiny_model):
    """prompt="<column>" was ambiguous (a prompt, or a column?): it keeps working, with a
    DeprecationWarning naming prompt_column=, and gives the same pixels."""
    new = inpaint(landsat_da, polygons, prompt_column="name", model=tiny_model, **FAST)
    with pytest.warns(DeprecationWarning, match="prompt_column='name'"):
        old = inpaint(landsat_da, polygons, prompt="name", model=tiny_model, **FAST)
    assert np.array_equal(new.values, old.values) and new.attrs["geot2e_prompt"] == old.attrs["geot2e_prompt"]
    from geot2e.errors import ParameterError

    with pytest.raises(ParameterError, match="not a column"):
        inpaint(landsat_da, polygons, prompt_column="nope", model=tiny_model, **FAST)
    with pytest.raises(ParameterError, match="geometries"):
        inpaint(landsat_da, np.zeros(landsat_da.shape[-2:], bool), prompt_column="name", model=tiny_model, **FAST)


def test_prompts_outside_the_models_vocabulary_warn_at_call_time(landsat_da, tiny_model_path, tmp_path):
    """A model knows the words of its training captions only: a prompt with others warns,
    naming them and the words the model knows; a known prompt does not."""
    import shutil
    import warnings

    from geot2e.errors import VocabularyWarning
    from geot2e.models import load_model
    from geot2e.models.vocabulary import CAPTIONER_VOCABULARY, save_vocabulary

    folder = tmp_path / "with_vocab"
    shutil.copytree(tiny_model_path, folder)
    save_vocabulary(folder, CAPTIONER_VOCABULARY, source="test")
    model = load_model(folder, device="cpu")
    mask = np.zeros(landsat_da.shape[-2:], bool)
    mask[10:30, 10:30] = True
    with pytest.warns(VocabularyWarning, match="lake"):
        inpaint(landsat_da, mask, "a lake among forests", model=model, **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VocabularyWarning)
        inpaint(landsat_da, mask, "mostly water, dark, smooth texture", model=model, **FAST)
