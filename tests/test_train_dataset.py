"""Tile dataset over real crops: GSD at or above native, nodata-free windows, D4 augmentation
that keeps statistics, area-averaged resampling, GSD labels that match the pixel scale."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geot2e.train.dataset import RasterSource, TileDataset, load_raster_source

SIZE = 32


@pytest.fixture(scope="module")
def landsat_src(data_dir):
    return load_raster_source(data_dir / "landsat_224078_rgb_crop.tif", nodata=0)


def test_load_fills_georeference_and_validity(landsat_src, landsat_da):
    s = landsat_src
    assert s.data.shape == (3, 512, 512) and s.data.dtype == np.float32
    assert s.gsd == pytest.approx(30.0, rel=0.01)          # ground GSD of UTM 30 m pixels
    assert s.transform is not None and tuple(s.transform)[:6] == tuple(landsat_da.rio.transform())[:6]
    assert s.crs is not None and s.crs.to_epsg() == 32621
    raw = landsat_da.values
    np.testing.assert_array_equal(s.valid, ~(raw == 0).any(0))
    assert 0 < (~s.valid).sum() < s.valid.size                # the crop holds some 0-valued scene edge


def test_samples_gsd_range_shape_and_values(landsat_src):
    ds = TileDataset([landsat_src], size=SIZE, gsd_max=300.0, seed=0)
    rng = np.random.default_rng(0)
    gsds = []
    for _ in range(60):
        s = ds.sample(rng)
        assert tuple(s["image"].shape) == (3, SIZE, SIZE) and s["image"].dtype == torch.float32
        assert float(s["image"].min()) >= -1.0 and float(s["image"].max()) <= 1.0
        assert isinstance(s["caption"], str) and s["caption"].startswith("satellite image")
        gsds.append(s["gsd"])
    g = np.array(gsds)
    assert g.min() >= landsat_src.gsd - 1e-6                # never finer than the native pixels
    assert g.max() <= 300.0 * (1 + 1.0 / SIZE)              # rounding of the window side
    assert g.max() / g.min() > 3                             # the GSD range is actually explored
    b = ds.batch(rng, 4)
    assert tuple(b["image"].shape) == (4, 3, SIZE, SIZE) and tuple(b["gsd"].shape) == (4,)


def test_windows_are_nodata_free(landsat_src):
    # make nodata pixels NaN: any of them inside a window would poison the tile
    data = landsat_src.data.copy()
    data[:, ~landsat_src.valid] = np.nan
    valid = landsat_src.valid.copy()
    rng0 = np.random.default_rng(5)
    for _ in range(6):                                       # plus a few holes in the middle
        y, x = rng0.integers(40, 450, 2)
        data[:, y:y + 12, x:x + 12] = np.nan
        valid[y:y + 12, x:x + 12] = False
    src = RasterSource(data=data, valid=valid, gsd=30.0)
    for stretch in (0.0, 1.0):
        ds = TileDataset([src], size=SIZE, gsd_max=200.0, window_stretch=stretch, seed=0)
        rng = np.random.default_rng(1)
        for _ in range(80):
            assert torch.isfinite(ds.sample(rng)["image"]).all()


def test_small_clear_patches_still_give_native_windows():
    """Popcorn clouds (Landsat 8 Pensacola's PAN band): clear only in scattered 20 px patches,
    so coarser windows never fit; the sampler falls back to native pixels instead of failing."""
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 1, (1, 400, 400)).astype(np.float32)
    valid = np.zeros((400, 400), bool)
    for r in range(10, 400, 60):
        for c in range(10, 400, 60):
            valid[r:r + 20, c:c + 20] = True
    src = RasterSource(data=data, valid=valid, gsd=15.0)
    ds = TileDataset([src], size=16, gsd_max=500.0, bands=1, seed=0)
    draws = np.random.default_rng(1)
    tiles = [ds.sample(draws) for _ in range(20)]
    assert all(t["image"].shape == (1, 16, 16) for t in tiles)
    assert all(abs(t["gsd"] - 15.0) < 15.0 * 0.3 for t in tiles)   # only (near-)native windows fit


def test_constant_image_stays_constant_at_every_gsd():
    data = np.full((3, 200, 200), 150.0, np.float32)
    src = RasterSource(data=data, valid=np.ones((200, 200), bool), gsd=10.0,
                       low=np.full(3, 100.0, np.float32), high=np.full(3, 200.0, np.float32))
    ds = TileDataset([src], size=SIZE, gsd_max=60.0, window_stretch=0.0, seed=0)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(30):
        s = ds.sample(rng)
        np.testing.assert_allclose(s["image"].numpy(), 0.0, atol=1e-6)   # (150-100)/100*2-1
        seen.add(round(s["gsd"], 3))
    assert len(seen) > 5


def _d4(a: np.ndarray) -> list[np.ndarray]:
    out = []
    for k in range(4):
        r = np.rot90(a, k, axes=(1, 2))
        out += [r, r[:, :, ::-1]]
    return out


def test_flips_and_rotations_keep_statistics(rgbn_da):
    # a source exactly one tile large: every sample is the whole image, only D4-transformed
    a = rgbn_da.values[:3, :SIZE, :SIZE].astype(np.float32)
    src = RasterSource(data=a, valid=np.ones((SIZE, SIZE), bool), gsd=5.0)
    ds = TileDataset([src], size=SIZE, gsd_max=5.0, window_stretch=0.0, seed=0)
    base = np.clip((a - src.low[:, None, None]) / (src.high - src.low)[:, None, None], 0, 1) * 2 - 1
    variants = _d4(base)
    rng = np.random.default_rng(0)
    used = set()
    for _ in range(40):
        s = ds.sample(rng)
        img = s["image"].numpy()
        assert s["gsd"] == pytest.approx(5.0)
        np.testing.assert_allclose(np.sort(img.reshape(3, -1), 1), np.sort(base.reshape(3, -1), 1), atol=1e-6)
        np.testing.assert_allclose(img.mean((1, 2)), base.mean((1, 2)), atol=1e-6)
        match = [i for i, v in enumerate(variants) if np.allclose(v, img, atol=1e-6)]
        assert match, "sample is not a rotation/flip of the source"
        used.add(match[0])
    assert len(used) >= 6                                   # the augmentations are all used


def _period(img: np.ndarray) -> float:
    """Dominant period (pixels) of a stripe pattern along either axis, by a fine DTFT scan."""
    best = (0.0, None)
    for prof in (img.mean(0), img.mean(1)):
        p = prof - prof.mean()
        n = np.arange(p.size)
        freqs = np.linspace(0.05, 0.5, 2000)
        power = np.abs(np.exp(-2j * np.pi * freqs[:, None] * n[None]) @ p)
        i = int(power.argmax())
        if power[i] > best[0]:
            best = (power[i], 1.0 / freqs[i])
    return best[1]


def test_gsd_label_matches_pixel_scale():
    # stripes with an 80 m period on a 10 m grid: after resampling, period_px * gsd stays 80 m
    H = 256
    x = np.arange(H, dtype=np.float32)
    stripes = np.sin(2 * np.pi * x / 8.0)[None, None, :] * np.ones((3, H, 1), np.float32)
    data = 100 + 50 * stripes
    src = RasterSource(data=data, valid=np.ones((H, H), bool), gsd=10.0)
    ds = TileDataset([src], size=SIZE, gsd_max=20.0, window_stretch=0.0, seed=0)
    rng = np.random.default_rng(2)
    for _ in range(25):
        s = ds.sample(rng)
        period_m = _period(s["image"].numpy()[0]) * s["gsd"]
        assert period_m == pytest.approx(80.0, rel=0.05)


def test_weights_pick_sources(landsat_src, data_dir):
    rgbn = load_raster_source(data_dir / "rgbn_5m_crop.tif", nir_band=3, weight=3.0)
    ds = TileDataset([landsat_src, rgbn], size=SIZE, gsd_max=100.0, seed=0)
    rng = np.random.default_rng(0)
    fine = sum(ds.sample(rng)["gsd"] < 30.0 - 1e-6 for _ in range(60))
    # only the 5 m raster yields GSD < 30 m; it has 3/4 of the weight (log-uniform GSD 5-100 m)
    assert 15 <= fine <= 55
    assert math.isclose(rgbn.gsd, 5.0, rel_tol=0.01)


def _class_shares(ds, n=300, seed=0):
    rng = np.random.default_rng(seed)
    got = [ds.sample(rng)["caption"] for _ in range(n)]
    return {c: got.count(c) / n for c in set(got)}


def test_class_balance_evens_out_content_classes(landsat_src, data_dir):
    from geot2e.train.captions import measure_content

    rgbn = load_raster_source(data_dir / "rgbn_5m_crop.tif", nir_band=3)

    def make(beta):  # the "caption" is the tile's dominant content class
        return TileDataset([landsat_src, rgbn], size=SIZE, gsd_max=100.0, seed=0, class_balance=beta,
                           caption_fn=lambda rgb, nir, g: measure_content(rgb, nir).dominant())

    plain, half, full = _class_shares(make(0.0)), _class_shares(make(0.5)), _class_shares(make(1.0))
    major = max(plain, key=plain.get)
    minor = min(plain, key=plain.get)
    assert len(plain) >= 3 and plain[major] > 0.4
    # the majority class gives way step by step, the rarest gains
    assert full[major] < half[major] - 0.05 < plain[major] - 0.1
    assert full.get(minor, 0) > 2 * plain[minor]
    # at beta = 1 the classes the data hold come out about equally often
    assert max(full.values()) < 2.5 * min(full.values())


def test_class_balance_off_keeps_the_stream_and_rejects_bad_values(landsat_src):
    from geot2e.errors import ParameterError

    a = TileDataset([landsat_src], size=SIZE, gsd_max=100.0, seed=0)
    b = TileDataset([landsat_src], size=SIZE, gsd_max=100.0, seed=0, class_balance=0.0)
    ra, rb = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(5):
        sa, sb = a.sample(ra), b.sample(rb)
        assert torch.equal(sa["image"], sb["image"]) and sa["caption"] == sb["caption"]
    assert b.class_counts == {}
    for bad in (-0.1, 1.5):
        with pytest.raises(ParameterError, match="class_balance"):
            TileDataset([landsat_src], size=SIZE, class_balance=bad)
        with pytest.raises(ParameterError, match="window_stretch"):
            TileDataset([landsat_src], size=SIZE, window_stretch=bad)


def test_stretch_word_marks_exactly_the_windows_stretched_by_their_own_percentiles(landsat_src):
    """With ``stretch_word`` the automatic caption says when a window was scaled by its own
    percentiles; the pixels and the other captions stay as without it."""
    word = "contrast stretched"
    for p in (0.0, 1.0):
        plain = TileDataset([landsat_src], size=SIZE, gsd_max=100.0, seed=0, window_stretch=p)
        marked = TileDataset([landsat_src], size=SIZE, gsd_max=100.0, seed=0, window_stretch=p, stretch_word=word)
        ra, rb = np.random.default_rng(5), np.random.default_rng(5)
        for _ in range(6):
            a, b = plain.sample(ra), marked.sample(rb)
            assert torch.equal(a["image"], b["image"])
            assert b["caption"] == (f"{a['caption']}, {word}" if p == 1.0 else a["caption"])
    mixed = TileDataset([landsat_src], size=SIZE, gsd_max=100.0, seed=0, stretch_word=word)
    caps = [mixed.sample(np.random.default_rng(i))["caption"] for i in range(40)]
    assert 5 < sum(c.endswith(word) for c in caps) < 35     # about half of the windows (window_stretch 0.5)


def test_area_mean_equals_area_interpolation_of_the_window(landsat_src):
    """The summed-area table gives the window's area average (what F.interpolate(mode="area")
    computes) for any window size, to float32 rounding, without reading the window."""
    import torch.nn.functional as F

    rng = np.random.default_rng(3)
    _, H, W = landsat_src.data.shape
    for out in (64, 128, 48):
        for _ in range(10):
            n = int(rng.integers(out + 1, min(H, W)))
            y, x = int(rng.integers(0, H - n + 1)), int(rng.integers(0, W - n + 1))
            want = F.interpolate(torch.from_numpy(landsat_src.data[:, y:y + n, x:x + n])[None], size=(out, out),
                                 mode="area")[0].numpy()
            got = landsat_src.area_mean(y, x, n, out)
            assert got.dtype == np.float32 and got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-3)
