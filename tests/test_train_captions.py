"""Automatic captions: known synthetic tiles get the words a user expects."""
from __future__ import annotations

import numpy as np
import pytest

from geot2e.train.captions import CONTENT_CLASSES, caption_tile, content_class, measure_content

RGB = {  # display-stretched reflectance-like colours in [0, 1]
    "water": (0.05, 0.12, 0.25),
    "vegetation": (0.15, 0.35, 0.12),
    "bare soil": (0.55, 0.42, 0.35),
}
NIR = {"water": 0.03, "vegetation": 0.60, "bare soil": 0.45}
WORD = {"water": "water", "vegetation": "green vegetation", "bare soil": "bare soil"}


def _tile(kind: str, n: int = 32, seed: int = 0, noise: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rgb = np.asarray(RGB[kind], np.float32)[:, None, None] * np.ones((3, n, n), np.float32)
    return np.clip(rgb + rng.normal(0, noise, rgb.shape), 0, 1).astype(np.float32)


@pytest.mark.parametrize("kind", list(RGB))
def test_pure_tiles_get_their_word_rgb_only(kind):
    cap = caption_tile(_tile(kind))
    assert cap.startswith("satellite image")
    assert f"mostly {WORD[kind]}" in cap
    others = [WORD[k] for k in RGB if k != kind]
    assert not any(o in cap for o in others), cap
    assert content_class(measure_content(_tile(kind))) == kind


@pytest.mark.parametrize("kind", list(RGB))
def test_pure_tiles_get_their_word_with_nir(kind):
    rgb = _tile(kind, seed=1)
    nir = np.full(rgb.shape[1:], NIR[kind], np.float32)
    cap = caption_tile(rgb, nir)
    assert f"mostly {WORD[kind]}" in cap, cap
    assert content_class(measure_content(rgb, nir)) == kind


def test_nir_separates_vegetation_that_rgb_calls_soil():
    # a brownish canopy: no excess green, but a strong NIR response -> vegetation by NDVI
    rgb = np.stack([np.full((16, 16), v, np.float32) for v in (0.32, 0.26, 0.18)])
    assert content_class(measure_content(rgb)) == "bare soil"
    assert content_class(measure_content(rgb, np.full((16, 16), 0.7, np.float32))) == "vegetation"


def test_mixed_tile_names_both_parts_with_amounts():
    a, b = _tile("water"), _tile("vegetation")
    mixed = np.concatenate([a[:, :, :16], b[:, :, 16:]], axis=2)
    cap = caption_tile(mixed)
    assert "some water" in cap and "some green vegetation" in cap, cap
    c = measure_content(mixed)
    assert c.water == pytest.approx(0.5, abs=0.05) and c.vegetation == pytest.approx(0.5, abs=0.05)


def test_brightness_texture_and_scale_words():
    flat_dark = _tile("water", noise=0.0)
    assert "dark" in caption_tile(flat_dark) and "smooth texture" in caption_tile(flat_dark)
    rng = np.random.default_rng(3)
    rough = np.clip(0.4 + 0.5 * rng.standard_normal((3, 32, 32)), 0, 1).astype(np.float32)
    assert "rough texture" in caption_tile(rough)
    assert caption_tile(flat_dark, gsd=10.0).endswith("field scale")
    assert caption_tile(flat_dark, gsd=100.0).endswith("landscape scale")
    assert caption_tile(flat_dark, gsd=400.0).endswith("regional scale")


def test_fractions_are_fractions_on_real_crop(rgbn_da):
    a = rgbn_da.values.astype(np.float32) / 255.0
    c = measure_content(a[:3], a[3])
    parts = [c.water, c.vegetation, c.bare, c.built]
    assert all(0.0 <= f <= 1.0 for f in parts) and sum(parts) <= 1.0 + 1e-6
    assert content_class(c) in CONTENT_CLASSES
