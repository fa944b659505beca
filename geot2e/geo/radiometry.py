"""Radiometric scaling between a raster's values and the model's [-1, 1] range.

:meth:`Radiometry.fit` measures robust per-band percentiles (default 0.5 and 99.5)
of the valid pixels; :meth:`~Radiometry.to_model` maps ``[lo, hi]`` linearly onto
``[-1, 1]`` (values outside map outside; the caller clips for the model) and
:meth:`~Radiometry.from_model` maps back to the raster's dtype. The scaling is
recorded with :meth:`~Radiometry.to_dict` for provenance.

Round trip ``from_model(to_model(x))``: integer dtypes come back exactly (for any
value of the dtype's range); float32 within ~1e-6 of the band's ``hi - lo``.
Nodata pixels (the nodata value or NaN in any band) are never used to fit, and
``from_model`` never writes the nodata value for a valid pixel (a value that would
equal it is nudged by one step, e.g. 0 -> 1 for ``nodata=0``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr

from geot2e.errors import DimensionError, NodataError, ParameterError
from geot2e.geo.grid import get_nodata, spatial_dims

__all__ = ["Radiometry", "MAX_FIT_PIXELS"]

#: at most this many pixels (per band) are read to fit the percentiles
MAX_FIT_PIXELS = 2_000_000


def _is_nan(v) -> bool:
    try:
        return bool(np.isnan(v))
    except (TypeError, ValueError):
        return False


def _as_band_yx(data):
    """(band, y, x) array (numpy or dask) from a DataArray or array."""
    if isinstance(data, xr.DataArray):
        ydim, xdim = spatial_dims(data)
        others = [d for d in data.dims if d not in (ydim, xdim)]
        if len(others) > 1:
            raise DimensionError(
                f"expected (band, y, x) or (y, x), got dims {data.dims}; select one time/sample."
            )
        data = data.transpose(*others, ydim, xdim).data
    if not isinstance(data, dsa.Array):
        data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise DimensionError(f"expected a (band, y, x) or (y, x) array, got shape {data.shape}.")
    return data


@dataclass
class Radiometry:
    """Per-band linear scaling ``[lo, hi] <-> [-1, 1]``.

    Attributes
    ----------
    lo, hi : tuple of float
        Per-band values mapped to -1 and +1.
    dtype : str
        dtype that :meth:`from_model` returns by default (the input's).
    nodata : float or None
        Nodata value of the input (``nan`` for NaN); never written for valid pixels.
    low, high : float
        Percentiles the bounds were fitted at.
    n_pixels : int
        Number of valid pixels (per band) the fit used.
    stride : int
        Subsampling step in y and x used by the fit.
    """

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    dtype: str
    nodata: float | None = None
    low: float = 0.5
    high: float = 99.5
    n_pixels: int = 0
    stride: int = 1
    method: str = field(default="percentile")

    def __post_init__(self):
        self.lo = tuple(float(v) for v in np.atleast_1d(self.lo))
        self.hi = tuple(float(v) for v in np.atleast_1d(self.hi))
        if len(self.lo) != len(self.hi) or not self.lo:
            raise ParameterError("lo and hi must give one value per band.")
        if any(not (h > l) for l, h in zip(self.lo, self.hi)):
            raise ParameterError(f"hi must exceed lo for every band (lo={self.lo}, hi={self.hi}).")
        self.dtype = str(np.dtype(self.dtype))

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        data,
        *,
        valid=None,
        nodata=None,
        dtype=None,
        low: float = 0.5,
        high: float = 99.5,
        max_pixels: int = MAX_FIT_PIXELS,
    ) -> "Radiometry":
        """Fit per-band bounds from robust percentiles of valid pixels.

        Parameters
        ----------
        data : numpy.ndarray, dask.array.Array or xarray.DataArray
            (band, y, x) or (y, x). A DataArray also supplies its nodata value.
        valid : array-like of bool, optional
            (y, x) or (band, y, x); only True pixels are used (e.g. exclude the area
            to synthesize).
        nodata : number, optional
            Nodata value (NaN is always excluded for float data).
        dtype : dtype, optional
            dtype for :meth:`from_model`; default: ``data``'s.
        low, high : float
            Percentiles mapped to -1 and +1.
        max_pixels : int
            Pixels are subsampled with a fixed stride in y and x so that at most this
            many are read; the result does not depend on dask chunking.

        Raises
        ------
        NodataError
            No valid pixel to fit from.
        """
        if not 0 <= low < high <= 100:
            raise ParameterError(f"need 0 <= low < high <= 100, got low={low}, high={high}.")
        if nodata is None and isinstance(data, xr.DataArray):
            nodata = get_nodata(data)
        arr = _as_band_yx(data)
        dtype = np.dtype(dtype or arr.dtype)
        _, h, w = arr.shape
        if h * w == 0:
            raise NodataError("the raster has no pixels to fit the radiometry from.")
        stride = max(1, math.ceil(math.sqrt(h * w / max(1, max_pixels))))
        sub = arr[:, ::stride, ::stride]
        vsub = None
        if valid is not None:
            v = valid.data if isinstance(valid, xr.DataArray) else valid
            if not isinstance(v, dsa.Array):
                v = np.asarray(v)
            if v.shape[-2:] != (h, w):
                raise DimensionError(
                    f"valid has shape {v.shape}, the data {arr.shape}: give a (y, x) mask on the "
                    "same grid."
                )
            vsub = v[..., ::stride, ::stride]
        if isinstance(sub, dsa.Array) or isinstance(vsub, dsa.Array):
            import dask

            sub, vsub = dask.compute(sub, vsub)
        sub = np.asarray(sub)
        ok = np.ones(sub.shape[1:], dtype=bool)
        if np.issubdtype(sub.dtype, np.floating):
            ok &= ~np.isnan(sub).any(axis=0)
        if nodata is not None and not _is_nan(nodata):
            ok &= ~(sub == nodata).any(axis=0)
        if vsub is not None:
            vsub = np.asarray(vsub, dtype=bool)
            ok &= vsub.all(axis=0) if vsub.ndim == 3 else vsub
        n = int(ok.sum())
        if n == 0:
            raise NodataError(
                "no valid pixel to fit the radiometry from (all nodata/NaN or excluded by "
                "valid=); check the raster's nodata value or pass a larger area."
            )
        vals = sub[:, ok].astype(np.float64)
        finite = np.isfinite(vals).all(axis=0)
        vals = vals[:, finite]
        if vals.shape[1] == 0:
            raise NodataError("no finite valid pixel to fit the radiometry from.")
        lo, hi = np.percentile(vals, [low, high], axis=1)
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        for b in range(lo.size):
            if not hi[b] > lo[b]:  # constant band: keep the mapping invertible
                span = 1.0 if np.issubdtype(dtype, np.integer) else max(abs(lo[b]) * 1e-3, 1e-6)
                hi[b] = lo[b] + span
        nd = None if nodata is None else (float("nan") if _is_nan(nodata) else float(nodata))
        return cls(lo=tuple(lo), hi=tuple(hi), dtype=str(dtype), nodata=nd, low=float(low),
                   high=float(high), n_pixels=int(vals.shape[1]), stride=int(stride))

    @classmethod
    def full_range(cls, bands: int, *, dtype="uint8", nodata=None) -> "Radiometry":
        """The fixed scaling of 8-bit imagery: 0 -> -1, 255 -> +1 (``x / 127.5 - 1``).

        This is what the official Text2Earth pipelines do with their 8-bit RGB images
        (pixels / 255, then × 2 − 1); back, ``(y + 1) × 127.5`` rounded, clipped to 0..255.
        Only for ``uint8`` (other dtypes have no fixed display range; fit percentiles).
        """
        if np.dtype(dtype) != np.uint8:
            raise ParameterError(f"the fixed 0-255 scaling is for uint8 rasters, got {np.dtype(dtype)}; "
                                 "use Radiometry.fit for other dtypes.")
        nd = None if nodata is None else (float("nan") if _is_nan(nodata) else float(nodata))
        return cls(lo=(0.0,) * int(bands), hi=(255.0,) * int(bands), dtype="uint8", nodata=nd, low=0.0,
                   high=100.0, n_pixels=0, stride=1, method="fixed 0-255")

    # ------------------------------------------------------------------ mapping
    @property
    def bands(self) -> int:
        """Number of bands."""
        return len(self.lo)

    def _params(self, ndim: int):
        lo = np.asarray(self.lo, np.float64)
        hi = np.asarray(self.hi, np.float64)
        if ndim >= 3:
            shape = (-1, 1, 1)
            return lo.reshape(shape), hi.reshape(shape)
        if self.bands != 1:
            raise DimensionError(
                f"a 2-D array was given but the scaling has {self.bands} bands; give (band, y, x)."
            )
        return lo[0], hi[0]

    def to_model(self, arr):
        """Map raster values to model space: ``lo -> -1``, ``hi -> +1`` (float32).

        The band axis is the third from last; NaN stays NaN; nothing is clipped.
        """
        if isinstance(arr, xr.DataArray):
            return arr.copy(data=self.to_model(arr.data))
        lo, hi = self._params(np.ndim(arr))
        x = (arr.astype(np.float64) - lo) * (2.0 / (hi - lo)) - 1.0
        return x.astype(np.float32)

    def from_model(self, arr, *, dtype=None):
        """Map model values back to raster values of ``dtype`` (default: the fitted one).

        Integers are rounded and clipped to the dtype's range; a valid value equal
        to the nodata value is nudged one step away from it; NaN becomes the nodata
        value (or 0 when there is none) for integer output and stays NaN for floats.
        """
        if isinstance(arr, xr.DataArray):
            return arr.copy(data=self.from_model(arr.data, dtype=dtype))
        dtype = np.dtype(dtype or self.dtype)
        lo, hi = self._params(np.ndim(arr))
        x = (arr.astype(np.float64) + 1.0) * ((hi - lo) / 2.0) + lo
        nd = self.nodata
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            isnan = np.isnan(x)
            x = np.clip(np.round(x), info.min, info.max)
            if nd is not None and not _is_nan(nd) and info.min <= nd <= info.max:
                nudge = nd + 1 if nd < info.max else nd - 1
                x = np.where(x == nd, nudge, x)
            fillv = nd if (nd is not None and not _is_nan(nd)) else 0
            x = np.where(isnan, fillv, x)
            return x.astype(dtype)
        if np.issubdtype(dtype, np.floating):
            x = x.astype(dtype)
            if nd is not None and not _is_nan(nd):
                nd_t = dtype.type(nd)
                x = np.where(x == nd_t, np.nextafter(nd_t, dtype.type(np.inf)), x)
            return x
        raise ParameterError(f"cannot convert to dtype {dtype}; use an integer or float dtype.")

    # --------------------------------------------------------------- provenance
    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description (NaN nodata is written as the string "nan")."""
        d = asdict(self)
        d["lo"], d["hi"] = list(self.lo), list(self.hi)
        if self.nodata is not None and _is_nan(self.nodata):
            d["nodata"] = "nan"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Radiometry":
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        nd = d.get("nodata")
        if isinstance(nd, str):
            d["nodata"] = float(nd)
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ParameterError(f"unknown radiometry fields {sorted(unknown)}.")
        return cls(**d)
