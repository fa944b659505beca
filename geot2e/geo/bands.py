"""Band roles: which physical band each band of a raster is (red, nir, swir1, ...).

One registry (:data:`ROLES`, :data:`SENSOR_BANDS`, :data:`ALIASES`) maps the names found in
the ecosystem to roles:

- roles themselves (``"red"``, ``"nir"``, ``"swir1"``, ...; see :data:`ROLES`);
- STAC ``eo:common_name`` spellings (``"swir16"``, ``"swir22"``, ``"nir08"``, ``"lwir11"``, ...);
- sensor band names: Landsat 8/9 OLI/TIRS ``B1``-``B11`` and Collection 2 ``SR_B1``-``SR_B7``,
  ``ST_B10``; Sentinel-2 MSI ``B01``-``B12`` and ``B8A`` (zero-padded: ``B05`` is Sentinel-2's
  red edge, ``B5`` Landsat's near-infrared; ``B10`` and ``B11`` are read as Sentinel-2's cirrus
  and SWIR 1, so name Landsat's thermal bands ``ST_B10``, ``tirs1``, ``tirs2``).

Names are matched case-insensitively, after stripping spaces. :func:`band_roles` reads a
raster's roles from its band descriptions (rioxarray's ``long_name`` attribute), else from
its ``band`` coordinate when that holds names; ``bands=`` overrides both.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import xarray as xr

from geot2e.errors import BandCountError, BandRoleError

__all__ = ["ROLES", "SENSOR_BANDS", "ALIASES", "role_of", "resolve_roles", "band_roles", "sensor_band"]

#: every role geot2e knows, with its centre wavelength in nanometres (Landsat 8 OLI / Sentinel-2)
ROLES: dict[str, str] = {
    "coastal": "coastal aerosol, 443 nm",
    "blue": "blue, 490 nm",
    "green": "green, 560 nm",
    "red": "red, 665 nm",
    "rededge1": "red edge 1, 705 nm",
    "rededge2": "red edge 2, 740 nm",
    "rededge3": "red edge 3, 783 nm",
    "nir": "near infrared, 842 nm (Landsat 8: 865 nm)",
    "nir08": "narrow near infrared, 865 nm",
    "water_vapour": "water vapour, 945 nm",
    "cirrus": "cirrus, 1375 nm",
    "swir1": "short-wave infrared 1, 1610 nm",
    "swir2": "short-wave infrared 2, 2200 nm",
    "pan": "panchromatic, 500-680 nm",
    "tirs1": "thermal infrared 1, 10.9 um",
    "tirs2": "thermal infrared 2, 12.0 um",
}

#: sensor band name -> role, per sensor (the names of their files and band descriptions)
SENSOR_BANDS: dict[str, dict[str, str]] = {
    "sentinel2": {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
                  "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "water_vapour",
                  "B10": "cirrus", "B11": "swir1", "B12": "swir2"},
    "landsat8": {"B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "nir", "B6": "swir1",
                 "B7": "swir2", "B8": "pan", "B9": "cirrus", "B10": "tirs1", "B11": "tirs2"},
    "landsat_c2l2": {"SR_B1": "coastal", "SR_B2": "blue", "SR_B3": "green", "SR_B4": "red", "SR_B5": "nir",
                     "SR_B6": "swir1", "SR_B7": "swir2", "ST_B10": "tirs1"},
}

#: other spellings of roles: STAC eo:common_name and usual abbreviations
ALIASES: dict[str, str] = {
    "swir16": "swir1", "swir22": "swir2", "lwir11": "tirs1", "lwir12": "tirs2", "lwir": "tirs1",
    "nir09": "water_vapour", "rededge": "rededge1", "pan": "pan", "panchromatic": "pan",
    "near_infrared": "nir", "near-infrared": "nir", "nir1": "nir", "swir_1": "swir1", "swir_2": "swir2",
    "r": "red", "g": "green", "b": "blue", "n": "nir",
}

#: Landsat's B10/B11 (thermal) and Sentinel-2's B10/B11 (cirrus, SWIR 1) share names: the Sentinel-2
#: meaning wins (reflectance stacks hold SWIR); name Landsat's thermal bands ST_B10, tirs1 or tirs2
_LOOKUP: dict[str, str] = {**{r: r for r in ROLES}, **ALIASES,
                           **{k.lower(): v for s in ("landsat8", "landsat_c2l2", "sentinel2")
                              for k, v in SENSOR_BANDS[s].items()}}


def role_of(name) -> str | None:
    """The role of one band name (a role, an alias or a sensor band name), or None."""
    if not isinstance(name, str):
        return None
    key = re.sub(r"\s+", "", name).lower()
    return _LOOKUP.get(key)


def sensor_band(sensor: str, role: str) -> str:
    """The band name of ``role`` on ``sensor`` (a key of :data:`SENSOR_BANDS`), e.g.
    ``sensor_band("sentinel2", "nir") == "B08"``."""
    table = SENSOR_BANDS[sensor]
    for k, v in table.items():
        if v == role:
            return k
    raise BandRoleError(f"{sensor} has no {role!r} band; its bands: {table}.")


def _hint() -> str:
    return ("name them with bands=('blue', 'green', 'red', 'nir', ...) (CLI: --bands blue green red nir), or "
            "write the descriptions once: da.attrs['long_name'] = (...); known roles: "
            f"{', '.join(ROLES)} (also Landsat B1-B11 / SR_B1-SR_B7, Sentinel-2 B01-B12 / B8A, STAC common names)")


def resolve_roles(names: Sequence, *, what: str = "bands") -> tuple[str, ...]:
    """Roles of a sequence of band names; every name must resolve and no role may repeat.

    Raises
    ------
    BandRoleError
        A name is not a known role or sensor band, or two bands have the same role.
    """
    names = list(names)
    roles = [role_of(n) for n in names]
    unknown = [n for n, r in zip(names, roles) if r is None]
    if unknown:
        raise BandRoleError(f"{what} {unknown} name no band role geot2e knows (all names: {names}); {_hint()}.")
    seen: dict[str, list] = {}
    for n, r in zip(names, roles):
        seen.setdefault(r, []).append(n)
    dup = {r: ns for r, ns in seen.items() if len(ns) > 1}
    if dup:
        which = "; ".join(f"{ns} are all {r!r}" for r, ns in dup.items())
        raise BandRoleError(f"{what} {names} give a role to more than one band ({which}); each role may appear "
                            "once: drop the extra band (da.drop_sel(band=...)) or name the bands correctly with "
                            "bands=(...).")
    return tuple(roles)


def _descriptions(da: xr.DataArray, band_dim: str) -> list | None:
    n = int(da.sizes[band_dim])
    ln = da.attrs.get("long_name")
    if isinstance(ln, str):
        ln = (ln,)
    if isinstance(ln, (tuple, list)) and len(ln) == n and all(isinstance(v, str) and v for v in ln):
        return list(ln)
    if band_dim in da.coords:
        vals = [v.item() if hasattr(v, "item") else v for v in da[band_dim].values]
        if all(isinstance(v, str) for v in vals):
            return vals
    return None


def band_roles(da: xr.DataArray, bands: Sequence[str] | None = None, *, band_dim: str | None = "band"
               ) -> tuple[str, ...] | None:
    """The role of every band of ``da``, in its order.

    Parameters
    ----------
    da : xarray.DataArray
        A raster; its band descriptions (``long_name``) or its ``band`` coordinate name the bands.
    bands : sequence of str, optional
        Names of the bands (roles, aliases or sensor names), one per band of ``da`` in order;
        given, they win over what the raster says.
    band_dim : str or None
        The band dimension (None: a single-band (y, x) raster).

    Returns
    -------
    tuple of str, or None
        None when neither ``bands`` nor the raster names its bands.

    Raises
    ------
    BandCountError
        ``bands`` has another length than the raster has bands.
    BandRoleError
        A name is unknown, or a role appears twice.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> da = xr.DataArray(np.zeros((4, 2, 2)), dims=("band", "y", "x"), attrs={"long_name": ("B02", "B03", "B04", "B08")})
    >>> band_roles(da)
    ('blue', 'green', 'red', 'nir')
    """
    n = int(da.sizes[band_dim]) if band_dim else 1
    if bands is not None:
        if isinstance(bands, str):
            bands = (bands,)
        bands = list(bands)
        if len(bands) != n:
            raise BandCountError(f"bands= names {len(bands)} band(s) ({', '.join(map(str, bands))}) but the raster "
                                 f"has {n}; give one name per band, in the raster's order (select bands first with "
                                 "da.isel(band=[...]) or geot2e.io.open_raster(path, bands=[1, 2, ...])).")
        return resolve_roles(bands, what="bands=")
    if band_dim is None:
        ln = da.attrs.get("long_name")
        return resolve_roles([ln], what="the band description") if isinstance(ln, str) and role_of(ln) else None
    names = _descriptions(da, band_dim)
    if names is None:
        return None
    return resolve_roles(names, what="the raster's band descriptions")
