"""geot2e.plot: before/after/mask quicklooks with one percentile stretch for both images."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from geot2e import plot  # noqa: E402


def _rgba(fig, i):
    return np.asarray(fig.axes[i].images[0].get_array())


def test_compare_returns_figure_with_three_axes_when_mask_given(landsat_da):
    after = landsat_da.copy()
    mask = np.zeros(landsat_da.shape[1:], bool)
    mask[100:150, 200:260] = True
    fig = plot.compare(landsat_da, after, mask=mask)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    assert [a.get_title() for a in fig.axes][0] == "before"
    fig2 = plot.compare(landsat_da, after)
    assert len(fig2.axes) == 2


def test_same_stretch_is_applied_to_before_and_after(landsat_da):
    """Identical pixels look identical in both panels; changed pixels do not move the stretch."""
    after = landsat_da.copy(data=landsat_da.values.copy())
    after.values[:, 10:40, 10:40] = 60000  # a bright change in 'after' only
    fig = plot.compare(landsat_da, after)
    b, a = _rgba(fig, 0), _rgba(fig, 1)
    same = np.ones(b.shape[:2], bool)
    same[10:40, 10:40] = False
    np.testing.assert_array_equal(b[same], a[same])
    assert np.all(a[10:40, 10:40, :3] == 1.0)  # clipped white, not a rescaled image


def test_stretch_ignores_nodata_and_masked_pixels(landsat_da):
    vals = landsat_da.values
    valid = (vals != 0).all(axis=0)
    lo, hi = plot.stretch_limits(vals.astype(float), valid, (2, 98))
    expected = np.percentile(vals[:, valid].astype(float), [2, 98], axis=1)
    np.testing.assert_allclose(lo, expected[0])
    np.testing.assert_allclose(hi, expected[1])
    # clouds painted under a mask do not change the stretch of a comparison
    cloudy = landsat_da.copy(data=vals.copy())
    mask = np.zeros(vals.shape[1:], bool)
    mask[200:300, 200:300] = True
    cloudy.values[:, mask] = 65000
    f_clean = plot.compare(landsat_da, landsat_da, mask=mask)
    f_cloudy = plot.compare(cloudy, landsat_da, mask=mask)
    outside = ~mask & valid
    np.testing.assert_allclose(_rgba(f_clean, 0)[outside], _rgba(f_cloudy, 0)[outside], atol=0.02)


def test_nodata_and_nan_are_transparent(landsat_da, derived):
    fig = plot.quicklook(landsat_da)
    rgba = _rgba(fig, 0)
    nodata = (landsat_da.values == 0).all(axis=0)
    assert nodata.any()
    assert np.all(rgba[nodata, 3] == 0) and np.all(rgba[~nodata, 3] == 1)
    f = derived("float_nan")
    fig = plot.compare(f, f, mask=np.isnan(f.values[0]))
    rgba = _rgba(fig, 0)
    assert np.isfinite(rgba).all()
    assert np.all(rgba[np.isnan(f.values[0]), 3] == 0)


def test_uint8_four_bands_shows_red_green_blue_by_name(rgbn_da):
    fig = plot.quicklook(rgbn_da)
    rgba = _rgba(fig, 0)
    r = rgbn_da.sel(band="red").values.astype(float)
    lo, hi = np.percentile(r, [2, 98])
    np.testing.assert_allclose(rgba[..., 0], np.clip((r - lo) / (hi - lo), 0, 1))
    fig = plot.quicklook(rgbn_da, bands=["nir"])  # one band: greyscale
    rgba = _rgba(fig, 0)
    np.testing.assert_array_equal(rgba[..., 0], rgba[..., 1])


def test_draws_in_map_coordinates_so_outpainted_grids_line_up(landsat_da):
    small = landsat_da.isel(y=slice(0, 100), x=slice(0, 100))
    fig = plot.compare(small, landsat_da)
    left, right, bottom, top = landsat_da.rio.bounds()[0], landsat_da.rio.bounds()[2], \
        landsat_da.rio.bounds()[1], landsat_da.rio.bounds()[3]
    for ax in fig.axes:
        assert ax.get_xlim() == pytest.approx((left, right))
        assert ax.get_ylim() == pytest.approx((bottom, top))


def test_user_axes_and_bad_inputs(landsat_da):
    fig = Figure()
    axes = fig.subplots(1, 2)
    assert plot.compare(landsat_da, landsat_da, ax=axes) is fig
    with pytest.raises(ValueError, match="3 Axes"):
        plot.compare(landsat_da, landsat_da, mask=np.zeros((512, 512), bool), ax=axes)
    with pytest.raises(ValueError, match="percentiles"):
        plot.quicklook(landsat_da, percentiles=(98, 2))
    with pytest.raises(ValueError, match="not found"):
        plot.quicklook(landsat_da, bands=["swir"])
