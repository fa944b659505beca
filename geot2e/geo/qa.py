"""Cloud masks from quality bands: Landsat Collection 2 QA_PIXEL and Sentinel-2 SCL.

Landsat Collection 2 ``QA_PIXEL`` is a bit field (USGS LSDS-1619 / LSDS-1618):

====  ===============  =============================
bit   name             meaning
====  ===============  =============================
0     fill             no data
1     dilated_cloud    cloud dilated by the USGS
2     cirrus           high-confidence cirrus (L8/9)
3     cloud            cloud
4     shadow           cloud shadow
5     snow             snow / ice
6     clear            clear
7     water            water
====  ===============  =============================

Sentinel-2 L2A ``SCL`` is a classification: 0 no data, 1 saturated/defective,
2 dark area pixels (topographic shadow), 3 cloud shadow, 4 vegetation, 5 not
vegetated, 6 water, 7 unclassified, 8 cloud medium probability, 9 cloud high
probability, 10 thin cirrus, 11 snow/ice.

The pre-Collection Landsat 8 ``BQA`` band (kind ``"landsat8_bqa"``; e.g. the cloudy
Pensacola scene of the sample data) holds two-bit confidences (0 not determined, 1 low,
2 medium, 3 high): bits 14-15 cloud, 12-13 cirrus, 10-11 snow/ice, 4-5 water; bit 0 is
fill. Its classes: ``"cloud"`` (cloud confidence medium or high), ``"cloud_high"``,
``"cirrus"`` (cirrus confidence high), ``"snow"`` (snow/ice high). It has no shadow
flag: dilate with ``buffer_m`` to cover shadows next to clouds.

The default classes are the ones to fill: dilated cloud, cirrus, cloud and shadow
(Landsat) and SCL 3, 8, 9, 10 (Sentinel-2). Nodata pixels of the QA band are never
marked as cloud.
"""
from __future__ import annotations

from collections.abc import Iterable

import dask.array as dsa
import numpy as np
import xarray as xr

from geot2e.errors import DimensionError, ParameterError
from geot2e.geo.grid import get_nodata, spatial_dims
from geot2e.geo.masks import dilate_mask

__all__ = ["cloud_mask", "LANDSAT_QA_BITS", "SENTINEL2_SCL_CLASSES", "LANDSAT8_BQA_CONFIDENCE", "KINDS"]

LANDSAT_QA_BITS: dict[str, int] = {
    "fill": 0,
    "dilated_cloud": 1,
    "cirrus": 2,
    "cloud": 3,
    "shadow": 4,
    "snow": 5,
    "clear": 6,
    "water": 7,
}
_LANDSAT_ALIASES = {"cloud_shadow": "shadow", "dilated": "dilated_cloud", "ice": "snow"}
_LANDSAT_DEFAULT = ("dilated_cloud", "cirrus", "cloud", "shadow")

SENTINEL2_SCL_CLASSES: dict[str, tuple[int, ...]] = {
    "nodata": (0,),
    "saturated": (1,),
    "dark": (2,),
    "shadow": (3,),
    "vegetation": (4,),
    "bare": (5,),
    "water": (6,),
    "unclassified": (7,),
    "cloud_medium": (8,),
    "cloud_high": (9,),
    "cloud": (8, 9),
    "cirrus": (10,),
    "snow": (11,),
}
_S2_ALIASES = {
    "cloud_shadow": "shadow",
    "thin_cirrus": "cirrus",
    "not_vegetated": "bare",
    "topographic_shadow": "dark",
    "ice": "snow",
}
_S2_DEFAULT = ("shadow", "cloud_medium", "cloud_high", "cirrus")

#: pre-Collection Landsat 8 BQA: class -> (lowest bit of its 2-bit confidence, smallest confidence)
LANDSAT8_BQA_CONFIDENCE: dict[str, tuple[int, int]] = {
    "cloud": (14, 2),
    "cloud_high": (14, 3),
    "cirrus": (12, 3),
    "snow": (10, 3),
}
_BQA_ALIASES = {"ice": "snow", "cloud_medium": "cloud"}
_BQA_DEFAULT = ("cloud", "cirrus")

KINDS = ("landsat_qa_pixel", "sentinel2_scl", "landsat8_bqa")


def _resolve(kind: str, classes) -> tuple[str, list[int]]:
    """Return ('bits'|'values', ints) for the chosen classes."""
    if kind == "landsat_qa_pixel":
        table, aliases, default, what = LANDSAT_QA_BITS, _LANDSAT_ALIASES, _LANDSAT_DEFAULT, "bits"
    elif kind == "sentinel2_scl":
        table, aliases, default, what = SENTINEL2_SCL_CLASSES, _S2_ALIASES, _S2_DEFAULT, "values"
    elif kind == "landsat8_bqa":
        return "confidence", _resolve_bqa(classes)
    else:
        raise ParameterError(f"unknown kind {kind!r}; use one of {list(KINDS)}.")
    if classes is None:
        classes = default
    elif isinstance(classes, (str, int, np.integer)):
        classes = (classes,)
    out: list[int] = []
    for c in classes:
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            limit = 15 if what == "bits" else 255
            if not 0 <= int(c) <= limit:
                raise ParameterError(f"{what[:-1]} {c} is out of range for {kind}.")
            out.append(int(c))
            continue
        name = aliases.get(str(c).lower(), str(c).lower())
        if name not in table:
            raise ParameterError(
                f"unknown class {c!r} for {kind}; use names from {sorted(set(table) | set(aliases))} "
                f"or integer {what}."
            )
        v = table[name]
        out.extend(v if isinstance(v, tuple) else (v,))
    if not out:
        raise ParameterError(f"classes selects nothing for {kind}; give at least one class.")
    return what, sorted(set(out))


def _resolve_bqa(classes) -> list:
    if classes is None:
        classes = _BQA_DEFAULT
    elif isinstance(classes, str):
        classes = (classes,)
    out = []
    for c in classes:
        name = _BQA_ALIASES.get(str(c).lower(), str(c).lower())
        if name not in LANDSAT8_BQA_CONFIDENCE:
            raise ParameterError(f"unknown class {c!r} for landsat8_bqa; use names from "
                                 f"{sorted(set(LANDSAT8_BQA_CONFIDENCE) | set(_BQA_ALIASES))}.")
        out.append(LANDSAT8_BQA_CONFIDENCE[name])
    if not out:
        raise ParameterError("classes selects nothing for landsat8_bqa; give at least one class.")
    return sorted(set(out))


def _as_2d(qa) -> tuple[xr.DataArray, object]:
    """Squeeze a size-1 band dimension; return (2-D DataArray, nodata)."""
    if isinstance(qa, xr.DataArray):
        ydim, xdim = spatial_dims(qa)
        nodata = get_nodata(qa)
        extra = [d for d in qa.dims if d not in (ydim, xdim)]
        for d in extra:
            if qa.sizes[d] != 1:
                raise DimensionError(
                    f"the QA band has {qa.sizes[d]} entries along {d!r}; select the quality band "
                    f"(e.g. qa.sel({d}=...)) so that only (y, x) remains."
                )
        qa2 = qa.squeeze(extra, drop=True) if extra else qa
        return qa2.transpose(ydim, xdim), nodata
    arr = qa if isinstance(qa, dsa.Array) else np.asarray(qa)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise DimensionError(
            f"the QA array has shape {arr.shape}; give a 2-D (y, x) array or a (1, y, x) band."
        )
    return xr.DataArray(arr, dims=("y", "x")), None


def cloud_mask(
    qa,
    *,
    kind: str = "landsat_qa_pixel",
    buffer_m: float = 0.0,
    classes: Iterable[str | int] | str | None = None,
    gsd: float | tuple[float, float] | None = None,
) -> xr.DataArray:
    """Boolean cloud (and shadow) mask decoded from a quality band.

    Parameters
    ----------
    qa : xarray.DataArray or numpy.ndarray
        The QA band, (y, x) or (1, y, x); numpy- or dask-backed.
    kind : {"landsat_qa_pixel", "sentinel2_scl", "landsat8_bqa"}
        Landsat Collection 2 ``QA_PIXEL`` bit field, Sentinel-2 L2A ``SCL`` classes, or
        the pre-Collection Landsat 8 ``BQA`` confidences (see the module docstring).
    buffer_m : float, optional
        Dilate the mask by this many metres on the ground (uses the GSD).
    classes : sequence of str or int, optional
        What to mask. Landsat: names of bits ``"dilated_cloud"``, ``"cirrus"``,
        ``"cloud"``, ``"shadow"``, ``"snow"``, ... or bit numbers. Sentinel-2:
        ``"shadow"`` (3), ``"cloud_medium"`` (8), ``"cloud_high"`` (9), ``"cloud"``
        (8 and 9), ``"cirrus"`` (10), ... or SCL values. Default: clouds, cirrus
        and cloud shadow.
    gsd : float or (float, float), optional
        Pixel size in metres for ``buffer_m`` when ``qa`` has no CRS (e.g. numpy).

    Returns
    -------
    xarray.DataArray
        bool (y, x), True = cloud/shadow (a pixel to synthesize). Keeps the input's
        coordinates and CRS; lazy if the input is dask-backed.

    Raises
    ------
    ParameterError
        Unknown ``kind`` or class.
    DimensionError
        More than one band given.
    """
    what, ints = _resolve(kind, classes)
    qa2, nodata = _as_2d(qa)
    if np.issubdtype(qa2.dtype, np.floating):
        valid = ~np.isnan(qa2)
        qa_int = qa2.fillna(0).astype(np.int64)
    elif np.issubdtype(qa2.dtype, np.integer) or qa2.dtype == bool:
        valid = xr.ones_like(qa2, dtype=bool)
        qa_int = qa2.astype(np.int64)
    else:
        raise ParameterError(f"the QA band has dtype {qa2.dtype}; an integer band is expected.")
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        valid = valid & (qa2 != nodata)
    if what == "confidence":
        hit = None
        for shift, least in ints:
            h = ((qa_int >> shift) & 3) >= least
            hit = h if hit is None else hit | h
        valid = valid & ((qa_int & 1) == 0)
    elif what == "bits":
        bits = sum(1 << b for b in ints)
        hit = (qa_int & bits) != 0
        # the fill bit marks nodata whatever the other bits say
        if 0 not in ints:
            valid = valid & ((qa_int & 1) == 0)
    else:
        hit = _isin_lazy(qa_int, ints)
        if 0 not in ints:
            valid = valid & (qa_int != 0)
    out = (hit & valid).astype(bool)
    out.name = "cloud_mask"
    out.attrs = {"kind": kind, what: [list(v) if isinstance(v, tuple) else v for v in ints]}
    if buffer_m:
        out = dilate_mask(out, buffer_m, gsd=gsd)
        out.attrs["buffer_m"] = float(buffer_m)
    return out


def _isin_lazy(arr: xr.DataArray, values: list[int]) -> xr.DataArray:
    """``arr`` in ``values``, elementwise (stays lazy for dask)."""
    hit = arr == values[0]
    for v in values[1:]:
        hit = hit | (arr == v)
    return hit
