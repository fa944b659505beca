"""The public functions with official Text2Earth folders (tiny random weights, real crops):
official defaults when options are left out (50 steps, the folder's scheduler, no colour
harmonisation, uint8 scaled 0-255), explicit options winning, percentiles for other dtypes,
geot2e.generate with the text-to-image model, and geot2e's own models unchanged."""
from __future__ import annotations

import numpy as np
import pytest

import geot2e
from engine_helpers import tiny_model, tiny_model_path  # noqa: F401
from geot2e.errors import ParameterError
from geot2e.models import load_model
from geot2e.models.defaults import resolve_sampling
from official_helpers import write_folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("official_api")
    return {"inpainting": write_folder(root / "Text2Earth-inpainting", kind="inpainting"),
            "text2image": write_folder(root / "Text2Earth", kind="text2image")}


@pytest.fixture
def rgb_u8(rgbn_da):
    """5 m uint8 RGB crop (EPSG:32618), 64 x 64."""
    return rgbn_da.sel(band=["red", "green", "blue"]).isel(x=slice(0, 64), y=slice(0, 64))


def _mask(da):
    m = np.zeros((da.sizes["y"], da.sizes["x"]), bool)
    m[13:43, 9:50] = True
    return m


def _record(model, monkeypatch):
    """Calls of ``model.inpaint`` (the engine's tile calls): images and keyword options."""
    calls = []
    orig = model.inpaint

    def record(images, masks, **kw):
        calls.append(dict(images=images.clone(), mask_fraction=float(masks.float().mean()), **kw))
        return orig(images, masks, **kw)

    monkeypatch.setattr(model, "inpaint", record)
    return calls


def test_official_defaults_when_options_are_left_out(folders, rgb_u8, monkeypatch):
    model = load_model(folders["inpainting"], device="cpu")
    calls = _record(model, monkeypatch)
    mask = _mask(rgb_u8)
    out = geot2e.inpaint(rgb_u8, mask, "a parking lot", model=model, progress=False)
    assert len(calls) == 1
    assert calls[0]["steps"] == 50 and calls[0]["scheduler"] == "PNDMScheduler" and calls[0]["harmonize"] == "none"
    # uint8 scaled with the fixed 0-255 range: the model sees x / 127.5 - 1 on known pixels
    x = calls[0]["images"][0].numpy()
    known = ~mask
    expect = rgb_u8.values.astype(np.float64) / 127.5 - 1
    np.testing.assert_allclose(x[:, known], expect[:, known], atol=1e-6)
    assert out.attrs["geot2e_steps"] == 50 and out.attrs["geot2e_scheduler"] == "PNDMScheduler"
    assert out.attrs["geot2e_harmonize"] == "none"
    assert out.attrs["geot2e_radiometry"]["method"] == "fixed 0-255"
    assert out.dtype == np.uint8 and out.rio.crs == rgb_u8.rio.crs
    np.testing.assert_array_equal(out.values[:, ~mask], rgb_u8.values[:, ~mask])  # known pixels bit for bit
    assert not np.array_equal(out.values[:, mask], rgb_u8.values[:, mask])


def test_explicit_options_win(folders, rgb_u8):
    model = load_model(folders["inpainting"], device="cpu")
    out = geot2e.inpaint(rgb_u8, _mask(rgb_u8), "a parking lot", model=model, steps=3, scheduler="euler",
                         harmonize=True, progress=False)
    assert out.attrs["geot2e_steps"] == 3 and out.attrs["geot2e_scheduler"] == "euler"
    assert out.attrs["geot2e_harmonize"] == "boundary"


def test_other_dtypes_keep_the_percentile_scaling(folders, landsat_da):
    """uint16 reflectance has no fixed display range: percentiles of the valid pixels, as for
    geot2e's models (the documented choice)."""
    da = landsat_da.isel(x=slice(200, 264), y=slice(200, 264))
    model = load_model(folders["inpainting"], device="cpu")
    out = geot2e.inpaint(da, _mask(da), model=model, steps=2, progress=False)
    assert out.attrs["geot2e_radiometry"]["method"] == "percentile" and out.dtype == np.uint16


def test_generate_with_the_text_to_image_model(folders, rgbn_da, monkeypatch):
    """A 128 x 128 uint8 canvas in 64-px tiles (96-px windows, so no window holds the whole
    canvas): first-pass tiles are pure text-to-image, the second pass blends the first pass's
    latents in (the 4-channel inpainting branch)."""
    like = rgbn_da.sel(band=["red", "green", "blue"]).isel(x=slice(0, 128), y=slice(0, 128))
    model = load_model(folders["text2image"], device="cpu")
    assert model.kind == "text2image"
    calls = _record(model, monkeypatch)
    out = geot2e.generate("farmland", like=like, model=model, steps=3, tile=64, overlap=16, progress=False)
    assert out.shape == like.shape and out.dtype == np.uint8 and bool(out["synthesized"].all())
    assert out.rio.crs == like.rio.crs and out.rio.transform() == like.rio.transform()
    assert out.attrs["geot2e_radiometry"]["method"] == "fixed 0-255"
    assert {c["scheduler"] for c in calls} == {"EulerDiscreteScheduler"}
    assert {c["harmonize"] for c in calls} == {"none"}
    fractions = [c["mask_fraction"] for c in calls]
    assert any(f == 1.0 for f in fractions) and any(f < 1.0 for f in fractions)
    assert len(np.unique(out.values)) > 10


def test_geot2e_models_keep_their_defaults(tiny_model, rgb_u8):  # noqa: F811
    assert resolve_sampling(tiny_model) == (25, "ddim", "boundary")
    out = geot2e.inpaint(rgb_u8, _mask(rgb_u8), model=tiny_model, tile=64, overlap=16, progress=False)
    assert out.attrs["geot2e_steps"] == 25 and out.attrs["geot2e_scheduler"] == "ddim"
    assert out.attrs["geot2e_harmonize"] == "boundary"
    assert out.attrs["geot2e_radiometry"]["method"] == "percentile"
    with pytest.raises(ParameterError, match="unknown scheduler"):
        geot2e.inpaint(rgb_u8, _mask(rgb_u8), model=tiny_model, scheduler="PNDMScheduler", progress=False)
