"""Provenance attributes: what produced a raster, and how to read it back.

The engine attaches :func:`provenance_attrs` to every result it returns. Every key starts
with ``geot2e_`` so that provenance never collides with a user's own attributes.
:func:`geot2e.io.to_cog` writes these attributes into one GDAL metadata tag,
``GEOT2E_PROVENANCE`` (a JSON object), and :func:`geot2e.io.read_provenance` reads them back
from a GeoTIFF/COG, a Zarr store written by :mod:`geot2e.io`, or a DataArray (it lives in
:mod:`geot2e.io.raster`, which dispatches between the file kinds; this module knows none).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from typing import Any, Mapping

from geot2e.errors import ParameterError

__all__ = ["PREFIX", "PROVENANCE_TAG", "provenance_attrs", "provenance_from_attrs", "encode_provenance",
           "decode_provenance"]

#: Prefix of every provenance attribute.
PREFIX = "geot2e_"
#: Name of the GDAL metadata tag holding the provenance JSON object in a GeoTIFF/COG.
PROVENANCE_TAG = "GEOT2E_PROVENANCE"

#: Fields the engine fills in (others are accepted too and get the same prefix).
KNOWN_FIELDS = (
    "operation",
    "model_id",
    "checkpoint_hash",
    "prompt",
    "guidance",
    "steps",
    "seed",
    "gsd",
    "version",
    "created",
)


def _package_version() -> str:
    try:
        from geot2e._version import __version__
    except ImportError:  # pragma: no cover - only in a broken checkout
        return "unknown"
    return __version__


def _jsonable(key: str, value: Any) -> Any:
    """Return ``value`` as plain JSON types (numpy scalars/arrays become Python ones)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParameterError(
                f"provenance field {key!r} is {value!r}; store a finite number or a string."
            )
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(f"{key}.{k}", v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(key, v) for v in value]
    item = getattr(value, "item", None)  # numpy scalar / 0-d array
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return _jsonable(key, tolist())
    if callable(item):  # pragma: no cover - tolist covers numpy
        return _jsonable(key, item())
    raise ParameterError(
        f"provenance field {key!r} has type {type(value).__name__}, which cannot be stored "
        "as JSON; pass a str, number, bool, list or dict."
    )


def provenance_attrs(**fields: Any) -> dict[str, Any]:
    """Build the provenance attributes the engine attaches to its results.

    Parameters
    ----------
    **fields
        Provenance fields, e.g. ``operation``, ``model_id``, ``checkpoint_hash``,
        ``prompt``, ``guidance``, ``steps``, ``seed``, ``gsd``. Any other name is
        accepted as well. Values must be JSON-compatible (str, number, bool, list,
        dict; numpy scalars are converted). ``None`` values are left out.
        ``version`` defaults to the installed geot2e version and ``created`` to the
        current UTC time (ISO 8601, seconds, ``Z`` suffix).

    Returns
    -------
    dict
        ``{"geot2e_<field>": value}``, ready for ``da.attrs.update(...)``.

    Examples
    --------
    >>> attrs = provenance_attrs(operation="inpaint", prompt="a forest", seed=0)
    >>> attrs["geot2e_prompt"], attrs["geot2e_seed"]
    ('a forest', 0)
    """
    fields.setdefault("version", _package_version())
    fields.setdefault(
        "created",
        _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    )
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None:
            continue
        name = key if key.startswith(PREFIX) else PREFIX + key
        out[name] = _jsonable(key, value)
    return out


def provenance_from_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Return the ``geot2e_*`` entries of an attrs mapping."""
    return {k: v for k, v in attrs.items() if isinstance(k, str) and k.startswith(PREFIX)}


def encode_provenance(prov: Mapping[str, Any]) -> str:
    """JSON-encode provenance attrs (``geot2e_`` prefix kept) for :data:`PROVENANCE_TAG`."""
    return json.dumps({k: _jsonable(k, v) for k, v in prov.items()}, sort_keys=True)


def decode_provenance(text: str) -> dict[str, Any]:
    """Inverse of :func:`encode_provenance`; an unreadable tag gives an empty dict."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return dict(value) if isinstance(value, dict) else {}
