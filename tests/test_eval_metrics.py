"""geot2e.eval.metrics on cases with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from geot2e.eval.metrics import (colour_error, masked_metrics, psnr, robust_range, ssim, summarize, texture_ratio,
                                 to_unit)


@pytest.fixture(scope="module")
def truth():
    """A textured 3-band image in [0, 1] (smooth pattern + noise)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    base = 0.5 + 0.2 * np.sin(6 * xx) * np.cos(4 * yy)
    return np.clip(np.stack([base + 0.05 * rng.standard_normal((64, 64)) + 0.05 * b for b in range(3)]), 0, 1)


@pytest.fixture(scope="module")
def mask():
    m = np.zeros((64, 64), bool)
    m[16:48, 20:52] = True
    return m


def test_identical_fill_is_perfect(truth, mask):
    r = masked_metrics(truth, truth, mask, lo=np.zeros(3), hi=np.ones(3))
    assert r["psnr"] == math.inf
    assert r["ssim"] == pytest.approx(1.0)
    assert r["texture_ratio"] == pytest.approx(1.0)
    assert r["colour_error"] == 0.0


def test_psnr_of_a_known_offset(truth, mask):
    fill = truth.copy()
    fill[:, mask] += 0.1  # MSE = 0.01 over masked pixels -> 20 dB
    assert psnr(fill, truth, mask) == pytest.approx(20.0)
    # pixels outside the mask do not count
    fill2 = fill.copy()
    fill2[:, ~mask] = 0.0
    assert psnr(fill2, truth, mask) == pytest.approx(20.0)


def test_colour_error_is_per_band_mean_difference(truth, mask):
    fill = truth.copy()
    fill[0, mask] += 0.3
    fill[1, mask] -= 0.3  # texture unchanged, two bands off by 0.3
    assert colour_error(fill, truth, mask) == pytest.approx(0.2)
    assert texture_ratio(fill, truth, mask) == pytest.approx(1.0)


def test_constant_fill_has_no_texture(truth, mask):
    fill = truth.copy()
    fill[:, mask] = truth[:, mask].mean(axis=1, keepdims=True)
    assert texture_ratio(fill, truth, mask) == 0.0
    assert colour_error(fill, truth, mask) == pytest.approx(0.0, abs=1e-12)
    assert ssim(fill, truth, mask) < 0.5


def test_texture_ratio_scales_with_contrast(truth, mask):
    fill = truth.copy()
    mu = truth[:, mask].mean(axis=1, keepdims=True)
    fill[:, mask] = mu + 2.0 * (truth[:, mask] - mu)  # twice the contrast inside the mask
    # measured on the mask's interior, where the Laplacian only sees fill pixels
    assert texture_ratio(fill, truth, mask) == pytest.approx(2.0, rel=1e-6)


def test_ssim_averages_the_map_over_masked_pixels_only(truth, mask):
    fill = truth.copy()
    fill[:, :, :8] = 0.0  # changed far (> window) from the mask
    assert ssim(fill, truth, mask) == pytest.approx(1.0)
    fill[:, mask] = 1.0 - fill[:, mask]
    assert ssim(fill, truth, mask) < 0.2


def test_common_scale_makes_metrics_unit_free(truth, mask):
    dn = (truth * 3000 + 7000).round()  # like Landsat DN
    fill = dn.copy()
    fill[:, mask] = np.roll(dn, 3, axis=2)[:, mask]
    a = masked_metrics(fill, dn, mask)
    b = masked_metrics(fill * 2 + 100, dn * 2 + 100, mask)
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-9)
    lo, hi = robust_range(dn)
    u = to_unit(dn, lo, hi)
    assert np.percentile(u, 0.5) == pytest.approx(0.0, abs=0.02) and np.percentile(u, 99.5) == pytest.approx(1.0, abs=0.02)


def test_empty_mask_and_bad_shapes_raise(truth, mask):
    with pytest.raises(ValueError, match="no pixel"):
        psnr(truth, truth, np.zeros_like(mask))
    with pytest.raises(ValueError, match="shape"):
        psnr(truth, truth, mask[:10])


def test_summarize_skips_nan():
    s = summarize([{"psnr": 10.0, "ssim": 0.5, "texture_ratio": math.nan, "colour_error": 0.1},
                   {"psnr": 20.0, "ssim": 0.7, "texture_ratio": 1.0, "colour_error": 0.3}])
    assert s["psnr"]["mean"] == 15.0 and s["texture_ratio"]["n"] == 1 and s["ssim"]["median"] == pytest.approx(0.6)


def test_offpalette_counts_colours_the_scene_does_not_have():
    from geot2e.eval.metrics import offpalette_excess, offpalette_share

    rng = np.random.default_rng(0)
    truth = np.zeros((3, 32, 32))
    truth[0] = rng.uniform(0.0, 0.5, (32, 32))          # reddish-dark scene, green and blue low
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    same = truth.copy()
    same[:, mask] = truth[:, ~mask][:, : mask.sum()]    # fill with colours taken from the known pixels
    assert offpalette_share(same, truth, mask) == 0.0
    specks = same.copy()
    specks[:, 10, 10:20] = np.array([0.9, 0.1, 0.9])[:, None]   # 10 magenta specks
    assert offpalette_share(specks, truth, mask) == pytest.approx(10 / mask.sum())
    assert offpalette_excess(specks, truth, mask) == pytest.approx(10 / mask.sum() - offpalette_share(truth, truth, mask))
