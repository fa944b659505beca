"""Tile packs: a training run's sources as plain arrays, for a machine without the raster stack.

``geot2e train CONFIG --write-pack DIR`` reads the config's raster sources once (with their
valid masks: nodata, clouds and held-out blocks already removed, and the per-row GSD of
geographic grids) and its fixed validation tiles, and writes them to ``DIR`` as
safetensors arrays plus ``pack.json``. A config with ``pack: DIR`` then trains from the pack
through the same loop: the raster stack (rasterio, pyproj, xarray, geopandas) is never
imported, so a GPU box with torch, diffusers and open_clip runs the very code path of the CPU
run. Nothing is pickled.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ParameterError
from .dataset import RasterSource

__all__ = ["write_pack", "read_pack", "PACK_FORMAT"]

PACK_FORMAT = 1


def _compact(a: np.ndarray) -> np.ndarray:
    """Integral float data is stored as the rasters' own integers: uint8 where it fits (8-bit
    imagery: half the bytes to carry to a GPU box), else uint16; anything else as float32."""
    if a.size and np.all(np.isfinite(a)) and a.min() >= 0 and a.max() <= 65535 and np.all(a == np.round(a)):
        return a.astype(np.uint8 if a.max() <= 255 else np.uint16)
    return a.astype(np.float32)


def write_pack(out: str | Path, sources: Sequence[RasterSource], *, validation: dict | None = None,
               meta: dict | None = None) -> Path:
    """Write ``sources`` (and the fixed ``validation`` batch) to the pack folder ``out``."""
    from safetensors.numpy import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, s in enumerate(sources):
        arrays = {"data": _compact(s.data), "valid": s.valid.astype(np.uint8),
                  "low": np.asarray(s.low, np.float32), "high": np.asarray(s.high, np.float32)}
        if s.gsd_rows is not None:
            arrays["gsd_rows"] = np.asarray(s.gsd_rows, np.float64)
        fname = f"source_{i:02d}.safetensors"
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(out / fname))
        entries.append({"file": fname, "name": s.name, "gsd": float(s.gsd), "nir_band": s.nir_band,
                        "weight": float(s.weight), "rgb_bands": list(s.rgb_bands),
                        "crs": None if s.crs is None else str(s.crs),
                        "transform": None if s.transform is None else list(s.transform)[:6]})
    pack = {"format": PACK_FORMAT, "sources": entries, **(meta or {})}
    if validation is not None:
        save_file({"image": validation["image"].numpy().astype(np.float32),
                   "gsd": validation["gsd"].numpy().astype(np.float32)}, str(out / "validation.safetensors"))
        pack["validation_captions"] = list(validation["caption"])
    (out / "pack.json").write_text(json.dumps(pack, indent=1))
    return out


def read_pack(path: str | Path) -> tuple[list[RasterSource], dict | None, dict]:
    """The sources, validation batch (or None) and metadata of a pack written by :func:`write_pack`."""
    import torch
    from safetensors.numpy import load_file

    path = Path(path)
    f = path / "pack.json"
    if not f.is_file():
        raise ParameterError(f"{path} is not a tile pack (no pack.json); write one with "
                             "`geot2e train CONFIG --write-pack DIR`.")
    meta = json.loads(f.read_text())
    if meta.get("format") != PACK_FORMAT:
        raise ParameterError(f"{path}: pack format {meta.get('format')!r}, this geot2e reads {PACK_FORMAT}; "
                             "write the pack again with this version.")
    sources = []
    for e in meta["sources"]:
        a = load_file(str(path / e["file"]))
        transform = None
        if e.get("transform"):
            try:  # only caption tables need it; a torch-only machine may lack affine
                from affine import Affine

                transform = Affine(*e["transform"])
            except ImportError:  # pragma: no cover
                pass
        sources.append(RasterSource(data=a["data"].astype(np.float32), valid=a["valid"].astype(bool), gsd=e["gsd"],
                                    name=e["name"], nir_band=e["nir_band"], weight=e["weight"],
                                    rgb_bands=tuple(e["rgb_bands"]), low=a["low"], high=a["high"],
                                    transform=transform, crs=e.get("crs"), gsd_rows=a.get("gsd_rows")))
    val = None
    if (path / "validation.safetensors").is_file():
        v = load_file(str(path / "validation.safetensors"))
        val = {"image": torch.from_numpy(v["image"]), "gsd": torch.from_numpy(v["gsd"]),
               "caption": list(meta.get("validation_captions", []))}
    return sources, val, meta
