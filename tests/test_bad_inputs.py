"""Bad input through the public API and the CLI: a typed Geot2eError with a fix hint, and
nothing written or mutated.

Every case of :data:`CASES` is one kind of bad input. For each, the test checks the exact
exception class (or the documented warning/behaviour), that the message contains a hint
of what to do (``hint``, a regex), that the inputs are bit-identical afterwards (values,
coords, attrs, encoding) and that the working folder holds exactly the files it held
before the call (no partial output, no temporaries). :data:`CLI_CASES` does the same for
the command line (exit code, one-line message, no output file).

``scripts/gen_bad_inputs_table.py`` runs the same cases and prints the table of
``docs/bad_inputs.md`` with the real messages.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import numpy as np
import pytest
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the table script imports this module outside pytest
    sys.path.insert(0, str(ROOT))

import rioxarray  # noqa: E402,F401

from geot2e import errors as E  # noqa: E402

CROP = ROOT / "tests" / "data" / "landsat_224078_rgb_crop.tif"
#: fast engine settings (tile/overlap multiples of the tiny model's VAE factor 4)
FAST = dict(tile=64, overlap=16, steps=1, guidance=0.0, progress=False)


# --------------------------------------------------------------------------- environment
class Env:
    """Inputs shared by the cases: a 64 x 64 real Landsat crop (uint16, EPSG:32621, nodata 0,
    band = red/green/blue), a mask on its grid, a tiny random model and a work folder."""

    def __init__(self, tmp: Path, model_path: str | os.PathLike | None = None):
        import geopandas as gpd
        import shapely

        self.tmp = Path(tmp)
        if model_path is None:
            import torch

            from geot2e.models import Text2Earth, save_pretrained, tiny_config

            torch.manual_seed(0)
            model_path = save_pretrained(Text2Earth(tiny_config()), self.tmp / "tiny")
        self.model = str(model_path)
        full = rioxarray.open_rasterio(CROP)
        full = full.assign_coords(band=list(full.attrs["long_name"])).load()
        self.da = full.isel(y=slice(200, 264), x=slice(200, 264))  # no nodata pixel
        self.da_nodata = full.isel(y=slice(0, 64), x=slice(300, 364))  # 663 nodata (0) pixels
        self.mask = xr.zeros_like(self.da.isel(band=0, drop=True), dtype=bool)
        self.mask[20:40, 10:30] = True
        self.crs = self.da.rio.crs
        left, bottom, right, top = self.da.rio.bounds()
        self.inside = shapely.box(left + 300, bottom + 300, left + 900, bottom + 900)
        self.outside = shapely.box(left + 1e5, bottom + 1e5, left + 1e5 + 900, bottom + 1e5 + 900)
        self.polys = gpd.GeoDataFrame({"prompt": ["a lake", "a forest"]},
                                      geometry=[self.inside, shapely.box(right - 600, top - 600, right - 60,
                                                                         top - 60)], crs=self.crs)
        self.work = self.tmp / "work"  # where outputs would go: must stay as it was
        self.work.mkdir(exist_ok=True)
        self.inputs = self.tmp / "inputs"
        self.inputs.mkdir(exist_ok=True)
        self._files: dict[str, Path] = {}

    def kw(self, **over) -> dict:
        return {**FAST, "model": self.model, **over}

    # files for the CLI (and for cases reading from disk), made on first use
    def file(self, name: str) -> Path:
        if name not in self._files:
            self._files[name] = getattr(self, f"_make_{name}")(self.inputs)
        return self._files[name]

    def _make_tif(self, d):
        p = d / "crop.tif"
        self.da.rio.to_raster(p)
        return p

    def _make_nocrs_tif(self, d):
        import rasterio

        p = d / "nocrs.tif"
        with rasterio.open(p, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint16") as dst:
            dst.write(self.da.values)
        return p

    def _make_nodata_tif(self, d):
        p = d / "allnodata.tif"
        self.da.copy(data=np.zeros_like(self.da.values)).rio.write_nodata(0).rio.to_raster(p)
        return p

    def _make_inside_gpkg(self, d):
        import geopandas as gpd

        p = d / "inside.gpkg"
        gpd.GeoDataFrame(geometry=[self.inside], crs=self.crs).to_file(p)
        return p

    def _make_outside_gpkg(self, d):
        import geopandas as gpd

        p = d / "outside.gpkg"
        gpd.GeoDataFrame(geometry=[self.outside], crs=self.crs).to_file(p)
        return p

    def _make_nocrs_gpkg(self, d):
        import geopandas as gpd

        p = d / "nocrs.gpkg"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gpd.GeoDataFrame(geometry=[self.inside]).to_file(p)
        return p

    def _make_polys_gpkg(self, d):
        p = d / "polys.gpkg"
        self.polys.to_file(p)
        return p

    def _make_pickle_model(self, d):
        p = d / "weights.pt"
        p.write_bytes(b"\x80\x04K\x01.")  # a valid pickle stream; must never be opened as one
        return p

    def _make_corrupt_model(self, d):
        p = d / "corrupt_model"
        shutil.copytree(self.model, p)
        data = (p / "unet.safetensors").read_bytes()
        (p / "unet.safetensors").write_bytes(data[: len(data) // 2])  # truncated download
        return p

    def _make_mismatched_model(self, d):
        p = d / "mismatched_model"
        shutil.copytree(self.model, p)
        cfg = json.loads((p / "config.json").read_text())
        cfg["unet"]["block_out_channels"] = [64, 64]  # config of another model next to these weights
        (p / "config.json").write_text(json.dumps(cfg))
        return p

    def _make_classpath_model(self, d):
        p = d / "classpath_model"
        shutil.copytree(self.model, p)
        cfg = json.loads((p / "config.json").read_text())
        cfg["_class_name"] = "os.system"
        (p / "config.json").write_text(json.dumps(cfg))
        return p

    def _make_pickle_folder(self, d):
        p = d / "pickle_folder"
        p.mkdir()
        shutil.copy(Path(self.model) / "config.json", p / "config.json")
        (p / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
        return p

    def _make_bad_yaml(self, d):
        p = d / "broken.yaml"
        p.write_text("out_dir: run\nsources: [a.tif, b.tif\n")
        return p

    def _make_badtypes_yaml(self, d):
        p = d / "badtypes.yaml"
        p.write_text("steps: many\nlr: fast\n")
        return p

    def _make_mask_tif(self, d):
        p = d / "mask.tif"
        m = self.mask.astype("uint8").rio.write_crs(self.crs)
        m.attrs = {}
        m.rio.to_raster(p)
        return p

    def _make_nan_model(self, d):
        """A model folder whose weights are all NaN (a diverged training run)."""
        from safetensors.torch import load_file, save_file

        p = d / "nan_model"
        shutil.copytree(self.model, p)
        for f in p.glob("*.safetensors"):
            tensors = {k: (v * float("nan") if v.is_floating_point() else v) for k, v in load_file(f).items()}
            save_file(tensors, f)
        return p

    def _make_half_zarr(self, d):
        """A store a killed job left: its ledger lists 1 of its 4 blocks."""
        import geot2e.io as gio

        p = d / "half.zarr"
        gio.create_zarr_like(self.da, p, chunks=32)
        gio.write_zarr_region(self.da.isel(y=slice(0, 32), x=slice(0, 32)), p, "auto", done_key=(0, 0))
        return p

    def _make_src_zarr(self, d):
        import geot2e.io as gio

        p = d / "src.zarr"
        gio.create_zarr_like(self.da, p, chunks=32)
        gio.write_zarr_region(self.da, p, region={"y": slice(0, 64), "x": slice(0, 64)})
        return p


# --------------------------------------------------------------------------- fingerprints
def fingerprint(obj) -> Any:
    """Everything a user could see of an input: values, dtype, dims, coords, attrs, encoding."""
    if isinstance(obj, xr.DataArray):
        vals = np.asarray(obj.values)
        coords = {k: hashlib.sha256(np.ascontiguousarray(c.values).tobytes()).hexdigest() + repr(c.attrs)
                  for k, c in obj.coords.items()}
        return ("DataArray", hashlib.sha256(vals.tobytes()).hexdigest(), str(vals.dtype), obj.dims,
                coords, repr(obj.attrs), repr(obj.encoding), obj.name, getattr(obj.data, "name", None))
    if isinstance(obj, np.ndarray):
        return ("ndarray", hashlib.sha256(obj.tobytes()).hexdigest(), obj.dtype.str, obj.shape)
    try:
        import geopandas as gpd

        if isinstance(obj, gpd.GeoDataFrame):
            return ("GeoDataFrame", [g.wkb if g is not None else None for g in obj.geometry], str(obj.crs),
                    obj.drop(columns=obj.geometry.name).to_dict("list"), list(obj.columns))
    except ImportError:  # pragma: no cover
        pass
    if hasattr(obj, "wkb"):
        return ("geometry", obj.wkb)
    return repr(obj)


def folder_state(root: Path) -> list:
    """(relative path, size, mtime) of everything under ``root``."""
    out = []
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out.append((str(p.relative_to(root)), st.st_size if p.is_file() else -1, st.st_mtime_ns))
    return out


# --------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One kind of bad input."""

    id: str
    what: str                                  # the bad input, in the user's words
    call: str                                  # the public call, for the docs table
    make: Callable[[Env], dict]                # inputs (and files) of the case
    run: Callable[..., Any]                    # run(env, **inputs)
    error: type | None                         # expected exception class (exact)
    hint: str = ""                             # regex: the fix hint the message must contain
    warning: type | None = None                # expected warning (with error=None: documented behaviour)
    check: Callable[..., None] | None = None   # check(env, result, **inputs) for documented behaviour
    slow: bool = False                         # runs the model


def _api():
    import geot2e
    import geot2e.api

    return geot2e


def _nocrs(env):
    da = env.da.drop_vars("spatial_ref")
    da.attrs = {k: v for k, v in da.attrs.items() if k not in ("grid_mapping",)}
    da.encoding = {}
    assert da.rio.crs is None
    return {"da": da, "mask": np.asarray(env.mask)}


def _other_grid(env):
    m = env.mask.copy()
    return {"da": env.da, "mask": m.assign_coords(x=m.x + 30.0).rio.write_transform(
        m.rio.transform() * __import__("affine").Affine.translation(1, 0))}


def _other_crs(env):
    return {"da": env.da, "mask": env.mask.rio.write_crs("EPSG:32620")}


def _coarse(env):
    """The crop with 6 km pixels (beyond the model's trained 0.3-1000 m)."""
    from affine import Affine

    t = env.da.rio.transform()
    res = 6000.0
    da = env.da.assign_coords(x=t.c + res * (np.arange(64) + 0.5), y=t.f - res * (np.arange(64) + 0.5))
    da = da.rio.write_transform(Affine(res, 0, t.c, 0, -res, t.f))
    return {"da": da, "mask": np.asarray(env.mask)}


def _same_outside(env, result, da, mask, **_):
    """The call succeeds; pixels outside the mask are bit-identical."""
    m = np.asarray(mask if not isinstance(mask, xr.DataArray) else mask.values, dtype=bool)
    assert np.array_equal(result.values[:, ~m], da.values[:, ~m])
    assert result.dtype == da.dtype and result.rio.crs == da.rio.crs


def _unchanged_copy(env, result, da, **_):
    """remove_clouds returns an unchanged copy (nothing synthesized)."""
    assert np.array_equal(result.values, da.values)
    assert not bool(result["synthesized"].any())


def _nodata_covered(env, result, da, mask, **_):
    """Documented: masked nodata pixels are synthesized (never left as, or written as, the nodata
    value); unmasked nodata pixels stay nodata, bit for bit."""
    nd = (da.values == 0).any(0)
    m = mask.values
    assert (nd & m).sum() > 0 and (nd & ~m).sum() > 0
    assert np.array_equal(result.values[:, ~m], da.values[:, ~m])
    assert (result.values[:, nd & m] != 0).all()
    assert result.rio.nodata == 0


def _ro_dir(env):
    ro = env.work / "readonly"
    ro.mkdir(exist_ok=True)
    os.chmod(ro, 0o555)
    return {"da": env.da, "path": ro / "out.tif"}


def _deny_write(path: Path):
    """Make ``path``'s folder read-only for the library also when the tests run as root
    (root passes permission checks: os.access then reports the folder writable)."""
    real = os.access

    def access(p, mode, *a, **k):
        if Path(p) == path.parent and mode & os.W_OK:
            return False
        return real(p, mode, *a, **k)

    return mock.patch.object(os, "access", access)


def _to_cog_readonly(env, da, path):
    import geot2e.io as gio

    with _deny_write(path):
        return gio.to_cog(da, path)


def _exists(env):
    p = env.work / "exists.tif"
    p.write_bytes(b"precious")
    return {"da": env.da, "path": p}


def _bad_grid_store(env):
    src = env.file("src_zarr")
    dst = env.work / "other_grid.zarr"
    if not dst.exists():
        import geot2e.io as gio

        gio.create_zarr_like(env.da.isel(x=slice(0, 32)), dst, chunks=32)
    return {"src": src, "dst": dst, "mask": np.asarray(env.mask)}


def _long_prompt_lazy(env):
    return {"da": env.da.chunk({"y": 32, "x": 32}), "mask": env.mask, "prompt": "a river through farmland " * 20}


def _nan_mask(env, kind):
    m = np.asarray(env.mask, dtype="float32").copy()
    m[0, 0] = np.nan
    if kind == "numpy":
        return {"da": env.da, "mask": m}
    return {"da": env.da, "mask": env.mask.copy(data=m)}


def _halves_mask(env):
    m = np.asarray(env.mask, dtype="float32").copy()
    m[0:2, 0:2] = 0.5
    return {"da": env.da, "mask": m}


def _halves_count_as_true(env, result, da, mask, **_):
    """Documented: nonzero counts as True (the 0.5 pixels are synthesized); pixels outside bit-identical."""
    m = np.asarray(mask) != 0
    assert np.array_equal(result["synthesized"].values, m)
    assert np.array_equal(result.values[:, ~m], da.values[:, ~m])


def _no_cuda():
    return mock.patch("torch.cuda.is_available", lambda: False)


def _cuda_missing(env, da, mask):
    with _no_cuda():
        return _api().inpaint(da, mask, "x", **env.kw(device="cuda"))


CASES: list[Case] = [
    Case("no_crs", "raster without a CRS", "inpaint(da, mask)", _nocrs,
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         E.MissingCRSError, r"write_crs\(.*gsd="),
    Case("mask_other_grid", "mask DataArray on another grid (shifted one pixel)", "inpaint(da, mask)",
         _other_grid, lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         E.GridMismatchError, r"reproject_match"),
    Case("mask_other_shape", "mask DataArray of another shape", "inpaint(da, mask)",
         lambda env: {"da": env.da, "mask": env.mask.isel(x=slice(1, None))},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         E.GridMismatchError, r"reproject_match"),
    Case("mask_other_crs", "mask DataArray in another CRS", "inpaint(da, mask)", _other_crs,
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         E.GridMismatchError, r"reproject_match"),
    Case("mask_numpy_shape", "numpy mask of the wrong shape", "inpaint(da, mask)",
         lambda env: {"da": env.da, "mask": np.ones((32, 32), bool)},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         E.DimensionError, r"\(y, x\) shape"),
    Case("mask_wrong_type", "mask of an unusable type (a number)", "inpaint(da, 3)",
         lambda env: {"da": env.da}, lambda env, da: _api().inpaint(da, 3, "x", **env.kw()),
         E.ParameterError, r"bool DataArray.*geometries"),
    Case("geoms_no_crs", "geometries without a CRS", "inpaint(da, shapely_polygon)",
         lambda env: {"da": env.da, "mask": env.inside},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         E.GeometryCRSError, r"set_crs|crs="),
    Case("geoms_outside", "geometries outside the raster", "inpaint(da, gdf)",
         lambda env: {"da": env.da, "mask": env.polys.iloc[:1].set_geometry([env.outside], crs=env.crs)},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         E.EmptyMaskError, r"covers part of the raster|remove_clouds", warning=E.NoOverlapWarning),
    Case("geoms_outside_clouds", "cloud polygons outside the raster (remove_clouds)", "remove_clouds(da, gdf)",
         lambda env: {"da": env.da, "mask": env.polys.iloc[:1].set_geometry([env.outside], crs=env.crs)},
         lambda env, da, mask: _api().remove_clouds(da, mask, **env.kw()),
         None, warning=E.NoOverlapWarning, check=_unchanged_copy),
    Case("empty_raster", "empty raster (zero-size x dim)", "inpaint(da[:, :, :0], mask)",
         lambda env: {"da": env.da.isel(x=slice(0, 0)), "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         E.EmptyRasterError, r"crop a non-empty area"),
    Case("all_nodata", "all-nodata raster", "inpaint(da_all_nodata, mask)",
         lambda env: {"da": env.da.copy(data=np.zeros_like(env.da.values)), "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         E.NodataError, r"write_nodata|radiometry="),
    Case("all_nodata_cloud_free", "all-nodata raster with an empty cloud mask (remove_clouds)",
         "remove_clouds(da_all_nodata, all_false)",
         lambda env: {"da": env.da.copy(data=np.zeros_like(env.da.values)), "mask": xr.zeros_like(env.mask)},
         lambda env, da, mask: _api().remove_clouds(da, mask, **env.kw()),
         None, check=_unchanged_copy),
    Case("mask_covers_all", "mask covering every valid pixel (no context left)", "inpaint(da, all_true)",
         lambda env: {"da": env.da, "mask": xr.ones_like(env.mask)},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         E.NodataError, r"shrink the mask|radiometry=|generate"),
    Case("mask_covers_nodata", "mask covering nodata pixels (documented: they are synthesized)",
         "inpaint(da_with_nodata, mask)",
         lambda env: {"da": env.da_nodata, "mask": (env.da_nodata == 0).any("band").copy(data=np.pad(
             np.ones((64, 32), bool), ((0, 0), (0, 32))))},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         None, check=_nodata_covered, slow=True),
    Case("dims_4d_no_band", "4-D raster without a 'band' dim", "inpaint(da(time, spectral, y, x), mask)",
         lambda env: {"da": env.da.rename(band="spectral").expand_dims(time=2), "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         E.DimensionError, r"rename\("),
    Case("dims_no_xy", "raster without y/x dims (named a, b)", "inpaint(da(band, a, b), mask)",
         lambda env: {"da": env.da.rename(y="a", x="b").drop_vars("spatial_ref"), "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         E.DimensionError, r"set_spatial_dims|rename"),
    Case("dims_missing_y", "raster with x but no y dim (one row selected)", "inpaint(da.isel(y=0), mask)",
         lambda env: {"da": env.da.isel(y=0), "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         E.DimensionError, r"set_spatial_dims|rename"),
    Case("not_dataarray", "a numpy array instead of a DataArray", "inpaint(ndarray, mask)",
         lambda env: {"da": env.da.values, "mask": np.asarray(env.mask)},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         E.DimensionError, r"write_crs"),
    Case("band_count", "band count the model was not trained for (2 of 3)", "inpaint(da.isel(band=[0, 1]), mask)",
         lambda env: {"da": env.da.isel(band=[0, 1]), "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         E.BandCountError, r"bands=\[\.\.\.\].*--bands"),
    Case("bands_count_mismatch", "bands= naming 4 bands of a 3-band raster",
         "remove_clouds(da, mask, bands=('red', 'green', 'blue', 'nir'))",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().remove_clouds(da, mask, bands=("red", "green", "blue", "nir"), **env.kw()),
         E.BandCountError, r"one name per band"),
    Case("bands_unknown_role", "a band name that is no known role",
         "remove_clouds(da, mask, bands=('red', 'green', 'cloud'))",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().remove_clouds(da, mask, bands=("red", "green", "cloud"), **env.kw()),
         E.BandRoleError, r"\['cloud'\].*known roles"),
    Case("bands_duplicate_role", "two bands with the same role (B4 and red)",
         "remove_clouds(da, mask, bands=('B4', 'green', 'red'))",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().remove_clouds(da, mask, bands=("B4", "green", "red"), **env.kw()),
         E.BandRoleError, r"more than one band.*bands="),
    Case("modality_unknown", "a modality no model knows", "inpaint(da, mask, modality='sar')",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(modality="sar")),
         E.ParameterError, r"unknown modality 'sar'.*register_modality"),
    Case("modality_no_adapter", "a modality the model folder has no adapter for",
         "inpaint(da.isel(band=[0]), mask, modality='nir', bands=('nir',))",
         lambda env: {"da": env.da.isel(band=[0]), "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", bands=("nir",), **env.kw(modality="nir")),
         E.CheckpointError, r"no 'nir' adapter.*configs/modality_nir.yaml"),
    Case("modality_few_step", "a modality with the (RGB) few-step student",
         "inpaint(da, mask, modality='nir', few_step=True)",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(modality="nir", few_step=True)),
         E.ParameterError, r"few-step student is the RGB"),
    Case("modality_composite_fill", "a composite modality (generated, not filled) on inpaint",
         "inpaint(da, mask, modality='rgbn')",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(modality="rgbn")),
         E.ParameterError, r"generated by geot2e.generate.*leave modality unset"),
    Case("gsd_out_of_range", "GSD outside the trained range (6 km pixels)", "inpaint(da_6km, mask)",
         _coarse, lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         None, r"Resample|gsd=", warning=E.GSDRangeWarning, check=_same_outside, slow=True),
    Case("tile_not_multiple", "tile not a multiple of the VAE factor", "inpaint(..., tile=62)",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(tile=62)),
         E.TileSizeError, r"multiple of the model's VAE factor"),
    Case("overlap_not_multiple", "overlap not a multiple of the VAE factor", "inpaint(..., overlap=6)",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(overlap=6)),
         E.TileSizeError, r"multiple of the model's VAE factor"),
    Case("outpaint_zero", "outpaint by zero pixels", "outpaint(da)",
         lambda env: {"da": env.da}, lambda env, da: _api().outpaint(da, **env.kw()),
         E.ParameterError, r"at least one of left, right, top, bottom"),
    Case("outpaint_negative", "negative outpaint", "outpaint(da, left=-8)",
         lambda env: {"da": env.da}, lambda env, da: _api().outpaint(da, left=-8, **env.kw()),
         E.ParameterError, r">= 0"),
    Case("guidance_negative", "guidance < 0", "inpaint(..., guidance=-1)",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(guidance=-1.0)),
         E.ParameterError, r">= 0"),
    Case("guidance_nan", "guidance NaN", "inpaint(..., guidance=nan)",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(guidance=float("nan"))),
         E.ParameterError, r"finite number >= 0"),
    Case("steps_zero", "steps < 1", "inpaint(..., steps=0)",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(steps=0)),
         E.ParameterError, r"integer >= 1"),
    Case("samples_zero", "samples < 1", "inpaint(..., samples=0)",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(samples=0)),
         E.ParameterError, r"integer >= 1"),
    Case("seed_negative", "negative seed", "inpaint(..., seed=-1)",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(seed=-1)),
         E.ParameterError, r"integer >= 0"),
    Case("scheduler_unknown", "unknown scheduler", "inpaint(..., scheduler='plms')",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(scheduler="plms")),
         E.ParameterError, r"choose one of"),
    Case("harmonize_unknown", "unknown harmonisation mode", "remove_clouds(..., harmonize='poisson')",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().remove_clouds(da, mask, **env.kw(harmonize="poisson")),
         E.ParameterError, r"harmonisation mode"),
    Case("guidance_interval_out_of_range", "guidance interval outside [0, 1]",
         "remove_clouds(..., guidance_interval=1.5)",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().remove_clouds(da, mask, **env.kw(guidance_interval=1.5)),
         E.ParameterError, r"guidance_interval must be a number in \[0, 1\]"),
    Case("prompt_too_long", "prompt longer than the text encoder's context (dask input)",
         "inpaint(dask_da, mask, long_prompt)", _long_prompt_lazy,
         lambda env, da, mask, prompt: _api().inpaint(da, mask, prompt, **env.kw()),
         None, r"truncated", warning=E.PromptTruncatedWarning),
    Case("prompt_not_str", "prompt that is not a string", "inpaint(da, mask, prompt=3)",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, 3, **env.kw()),
         E.ParameterError, r"must be a string"),
    Case("prompt_column_missing", "prompt column not in the GeoDataFrame (a typo)", "inpaint(da, gdf, 'promt')",
         lambda env: {"da": env.da, "mask": env.polys},
         lambda env, da, mask: _api().inpaint(da, mask, "promt", **env.kw()),
         E.ParameterError, r"did you mean prompt='prompt'.*gdf.geometry"),
    Case("checkpoint_missing", "missing checkpoint folder", "inpaint(..., model='/no/such/model')",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(model=str(env.tmp / "no_such_model"))),
         E.CheckpointError, r"Pass a folder with config.json"),
    Case("checkpoint_corrupt", "corrupt (truncated) checkpoint", "inpaint(..., model=truncated)",
         lambda env: {"da": env.da, "mask": env.mask, "model": env.file("corrupt_model")},
         lambda env, da, mask, model: _api().inpaint(da, mask, "x", **env.kw(model=str(model))),
         E.CheckpointError, r"corrupt or unreadable"),
    Case("checkpoint_mismatched", "config.json that does not match the weights", "inpaint(..., model=mismatched)",
         lambda env: {"da": env.da, "mask": env.mask, "model": env.file("mismatched_model")},
         lambda env, da, mask, model: _api().inpaint(da, mask, "x", **env.kw(model=str(model))),
         E.CheckpointError, r"copied from another model"),
    Case("checkpoint_pickle", "a pickle checkpoint (.pt file)", "load_model('weights.pt')",
         lambda env: {"model": env.file("pickle_model")},
         lambda env, model: _api().load_model(str(model), device="cpu"),
         E.CheckpointError, r"Convert the weights to safetensors"),
    Case("checkpoint_pickle_folder", "a folder of pickle weights (.bin)", "load_model(folder_of_bin)",
         lambda env: {"model": env.file("pickle_folder")},
         lambda env, model: _api().load_model(str(model), device="cpu"),
         E.CheckpointError, r"Provide safetensors"),
    Case("checkpoint_class_path", "config.json naming a class", "load_model(folder)",
         lambda env: {"model": env.file("classpath_model")},
         lambda env, model: _api().load_model(str(model), device="cpu"),
         E.CheckpointError, r"Re-save it"),
    Case("output_exists", "output path exists", "io.to_cog(da, existing)", _exists,
         lambda env, da, path: _api().io.to_cog(da, path),
         E.OutputExistsError, r"overwrite=True"),
    Case("output_dir_missing", "output directory missing", "io.to_cog(da, 'missing/out.tif')",
         lambda env: {"da": env.da, "path": env.work / "missing" / "out.tif"},
         lambda env, da, path: _api().io.to_cog(da, path),
         E.OutputPathError, r"mkdir|choose another path"),
    Case("output_dir_readonly", "output directory read-only", "io.to_cog(da, 'readonly/out.tif')", _ro_dir,
         _to_cog_readonly, E.OutputPathError, r"directory you can write to"),
    Case("zarr_other_grid", "Zarr output store that belongs to another grid", "api.process_zarr(src, dst, mask)",
         _bad_grid_store,
         lambda env, src, dst, mask: __import__("geot2e.api").api.process_zarr(src, dst, mask, "x", **env.kw()),
         E.ZarrStoreMismatchError, r"new store path|overwrite=True"),
    Case("generate_no_grid", "generate without a grid", "generate('x')",
         lambda env: {}, lambda env: _api().generate("a lake", **env.kw()),
         E.ParameterError, r"like=|bounds="),
    Case("generate_bounds_no_crs", "generate from bounds without a CRS", "generate('x', bounds=..., gsd=30)",
         lambda env: {}, lambda env: _api().generate("a lake", bounds=(0, 0, 1920, 1920), gsd=30.0, **env.kw()),
         E.MissingCRSError, r"crs="),
    # upper bounds (issue 20): refused before a model is loaded or an array is built
    Case("steps_too_many", "steps beyond the model's timesteps (10**6 would run for hours)",
         "inpaint(..., steps=10**6)", lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(steps=10**6)),
         E.SizeLimitError, r"at most steps=1000"),
    Case("samples_too_many", "samples=10**6 (terabytes per tile batch)", "inpaint(..., samples=10**6)",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(samples=10**6)),
         E.SizeLimitError, r"GiB.*samples <= 64.*average"),
    Case("outpaint_too_far", "outpaint by 10**9 pixels", "outpaint(da, right=10**9)",
         lambda env: {"da": env.da}, lambda env, da: _api().outpaint(da, right=10**9, **env.kw()),
         E.SizeLimitError, r"in steps|generate"),
    Case("outpaint_canvas_too_big", "outpaint growing a numpy raster beyond memory (60 000 px each way)",
         "outpaint(da, right=60000, bottom=60000)", lambda env: {"da": env.da},
         lambda env, da: _api().outpaint(da, right=60000, bottom=60000, **env.kw()),
         E.SizeLimitError, r"GiB.*dask-backed.*chunk"),
    Case("generate_gsd_tiny", "generate with gsd=1e-7 m (10**19 pixels)", "generate('x', bounds=..., gsd=1e-7)",
         lambda env: {}, lambda env: _api().generate("a lake", bounds=(737145.0, -2801055.0, 738145.0, -2800355.0),
                                                     crs="EPSG:32621", gsd=1e-7, **env.kw()),
         E.SizeLimitError, r"GiB.*check gsd="),
    # devices, value scalings, weights, masks, helpers given numpy (issue 20)
    Case("device_typo", "device='gpu' (not a torch device name)", "inpaint(..., device='gpu')",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(device="gpu")),
         E.DeviceError, r"device='auto'.*'cuda'"),
    Case("device_cuda_missing", "device='cuda' on a machine without CUDA", "inpaint(..., device='cuda')",
         lambda env: {"da": env.da, "mask": env.mask}, _cuda_missing,
         E.DeviceError, r"device='cpu'"),
    Case("radiometry_wrong_type", "radiometry= a tuple instead of a Radiometry", "inpaint(..., radiometry=(0, 1000))",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(radiometry=(0, 1000))),
         E.ParameterError, r"Radiometry.fit\(da\)"),
    Case("radiometry_band_count", "radiometry= for 2 bands with a 3-band model",
         "inpaint(..., radiometry=Radiometry(lo=[0, 0], hi=[1, 1]))",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(
             radiometry=__import__("geot2e.geo", fromlist=["Radiometry"]).Radiometry(lo=[0, 0], hi=[9, 9],
                                                                                      dtype="uint16"))),
         E.BandCountError, r"one lo/hi per band"),
    Case("weights_nan", "a model folder whose weights are all NaN", "inpaint(..., model=nan_model)",
         lambda env: {"da": env.da, "mask": env.mask, "model": env.file("nan_model")},
         lambda env, da, mask, model: _api().inpaint(da, mask, "x", **env.kw(model=str(model))),
         E.CheckpointError, r"NaN.*another checkpoint"),
    Case("mask_nan_numpy", "float numpy mask holding NaN", "inpaint(da, float_mask_with_nan)",
         lambda env: _nan_mask(env, "numpy"), lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         E.MaskValueError, r"fillna\(0\).*fillna\(1\)"),
    Case("mask_nan_dataarray", "float DataArray mask holding NaN", "inpaint(da, float_dataarray_with_nan)",
         lambda env: _nan_mask(env, "dataarray"), lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         E.MaskValueError, r"fillna\(0\).*fillna\(1\)"),
    Case("mask_not_binary", "float mask with values other than 0 and 1 (0.5)", "inpaint(da, mask_with_halves)",
         _halves_mask, lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw()),
         None, r"bool mask", warning=E.MaskValueWarning, check=_halves_count_as_true, slow=True),
    Case("gsd_numpy", "a numpy array given to gsd()", "gsd(ndarray)",
         lambda env: {"arr": env.da.values}, lambda env, arr: _api().gsd(arr),
         E.DimensionError, r"gsd_from_transform"),
    Case("geometry_mask_numpy", "a numpy array given as geometry_mask(like=)", "geometry_mask(gdf, like=ndarray)",
         lambda env: {"arr": env.da.values, "gdf": env.polys},
         lambda env, arr, gdf: _api().geometry_mask(gdf, like=arr),
         E.DimensionError, r"write_crs.*write_transform"),
    Case("nodata_nan_uint", "nodata=nan for a uint16 raster", "io.open_raster(path, nodata=nan)",
         lambda env: {"path": env.file("tif")}, lambda env, path: _api().io.open_raster(path, nodata=float("nan")),
         E.ParameterError, r"integer value"),
    Case("nodata_negative_uint", "nodata=-1 for a uint16 raster", "io.open_raster(path, nodata=-1)",
         lambda env: {"path": env.file("tif")}, lambda env, path: _api().io.open_raster(path, nodata=-1),
         E.ParameterError, r"pick one in range"),
    Case("cog_compress_typo", "a COG compression that does not exist", "io.to_cog(da, path, compress='deflat')",
         lambda env: {"da": env.da, "path": env.work / "c.tif"},
         lambda env, da, path: _api().io.to_cog(da, path, compress="deflat"),
         E.ParameterError, r"is not one of"),
    Case("cog_complex", "a complex-valued raster to a COG", "io.to_cog(da.astype('complex64'), path)",
         lambda env: {"da": env.da.astype("complex64"), "path": env.work / "c.tif"},
         lambda env, da, path: _api().io.to_cog(da, path),
         E.ParameterError, r"real-valued bands"),
    Case("tile_too_big", "tile=10**6 (a terabyte mask grid)", "inpaint(..., tile=10**6)",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(tile=10**6)),
         E.SizeLimitError, r"256-1024 pixels"),
    Case("overlap_over_tile", "overlap larger than the tile", "inpaint(..., tile=64, overlap=128)",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(overlap=128)),
         E.SizeLimitError, r"tile=256, overlap=32"),
    Case("threads_too_many", "threads=100000 (libgomp aborts the process)", "inpaint(..., threads=100000)",
         lambda env: {"da": env.da, "mask": env.mask},
         lambda env, da, mask: _api().inpaint(da, mask, "x", **env.kw(threads=100000)),
         E.SizeLimitError, r"threads=None"),
    Case("buffer_not_finite", "buffer_m=inf", "geometry_mask(gdf, like=da, buffer_m=inf)",
         lambda env: {"da": env.da, "gdf": env.polys},
         lambda env, da, gdf: _api().geometry_mask(gdf, like=da, buffer_m=float("inf")),
         E.ParameterError, r"finite number of metres"),
    Case("zarr_input_unfinished", "a Zarr store a killed job left, given as input",
         "api.process_zarr(half_store, dst, mask)",
         lambda env: {"src": env.file("half_zarr"), "mask": np.asarray(env.mask)},
         lambda env, src, mask: __import__("geot2e.api").api.process_zarr(src, env.work / "o.zarr", mask, "x",
                                                                          **env.kw()),
         E.IncompleteStoreError, r"1 of 4 blocks.*process_zarr call again"),
]


@dataclass
class CliCase:
    """A bad command line: expected exit code and a hint in the one-line message."""

    id: str
    what: str
    argv: Callable[[Env], list]
    code: int
    hint: str
    output: str = "out.tif"
    files: list = field(default_factory=list)


def _cli_fast(env) -> list:
    return ["--model", env.model, "--tile", "64", "--overlap", "16", "--steps", "1", "--no-progress"]


CLI_CASES: list[CliCase] = [
    CliCase("no_crs", "input raster without a CRS",
            lambda env, out: ["inpaint", env.file("nocrs_tif"), out, "--mask", env.file("inside_gpkg"),
                              *_cli_fast(env)], 3, r"CRS"),
    CliCase("geoms_no_crs", "mask polygons without a CRS",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("nocrs_gpkg"), *_cli_fast(env)],
            3, r"set_crs|crs="),
    CliCase("geoms_outside", "mask polygons outside the raster",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("outside_gpkg"),
                              *_cli_fast(env)], 3, r"covers part of the raster"),
    CliCase("all_nodata", "all-nodata raster",
            lambda env, out: ["inpaint", env.file("nodata_tif"), out, "--mask", env.file("inside_gpkg"),
                              *_cli_fast(env)], 3, r"write_nodata|radiometry="),
    CliCase("band_count", "two bands for a three-band model (--bands 1 2)",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), "--bands", "1",
                              "2", *_cli_fast(env)], 3, r"--bands"),
    CliCase("tile_not_multiple", "--tile 62", lambda env, out: ["inpaint", env.file("tif"), out, "--mask",
                                                               env.file("inside_gpkg"), *_cli_fast(env),
                                                               "--tile", "62"], 3, r"multiple"),
    CliCase("outpaint_negative", "outpaint --left -8",
            lambda env, out: ["outpaint", env.file("tif"), out, "--left", "-8", *_cli_fast(env)], 3, r">= 0"),
    CliCase("guidance_negative", "--guidance -1",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), *_cli_fast(env),
                              "--guidance", "-1"], 3, r">= 0"),
    CliCase("steps_zero", "--steps 0",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), *_cli_fast(env),
                              "--steps", "0"], 3, r">= 1"),
    CliCase("samples_zero", "--samples 0",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), *_cli_fast(env),
                              "--samples", "0"], 3, r">= 1"),
    CliCase("scheduler_unknown", "--scheduler plms",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), *_cli_fast(env),
                              "--scheduler", "plms"], 2, r"invalid choice"),
    CliCase("harmonize_unknown", "--harmonize poisson",
            lambda env, out: ["remove-clouds", env.file("tif"), out, "--mask", env.file("inside_gpkg"),
                              *_cli_fast(env), "--harmonize", "poisson"], 2, r"invalid choice"),
    CliCase("guidance_interval_out_of_range", "--guidance-interval 2",
            lambda env, out: ["remove-clouds", env.file("tif"), out, "--mask", env.file("inside_gpkg"),
                              *_cli_fast(env), "--guidance-interval", "2"], 3, r"guidance_interval"),
    CliCase("prompt_column_missing", "--prompt-column naming no column",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("polys_gpkg"),
                              "--prompt-column", "promt", *_cli_fast(env)], 3, r"columns are"),
    CliCase("checkpoint_missing", "--model pointing nowhere",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), *_cli_fast(env),
                              "--model", str(env.tmp / "no_such_model")], 4, r"Pass a folder"),
    CliCase("checkpoint_pickle", "--model weights.pt (a pickle)",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), *_cli_fast(env),
                              "--model", env.file("pickle_model")], 4, r"safetensors"),
    CliCase("checkpoint_corrupt", "--model with a truncated safetensors file",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), *_cli_fast(env),
                              "--model", env.file("corrupt_model")], 4, r"corrupt"),
    CliCase("output_exists", "OUTPUT exists (no --overwrite)",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), *_cli_fast(env)],
            3, r"overwrite", output="exists.tif", files=["exists.tif"]),
    CliCase("output_dir_missing", "OUTPUT in a missing directory",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), *_cli_fast(env)],
            3, r"does not exist", output="missing/out.tif"),
    CliCase("input_missing", "INPUT does not exist",
            lambda env, out: ["inpaint", env.tmp / "nope.tif", out, "--mask", env.file("inside_gpkg"),
                              *_cli_fast(env)], 3, r"check the path"),
    # issue 20: every value a user can type is a one-line error, never "unexpected error"
    CliCase("steps_too_many", "--steps 1000000",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), *_cli_fast(env),
                              "--steps", "1000000"], 3, r"at most steps=1000"),
    CliCase("samples_too_many", "--samples 1000000",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), *_cli_fast(env),
                              "--samples", "1000000"], 3, r"samples <= 64"),
    CliCase("device_typo", "--device gpu",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), *_cli_fast(env),
                              "--device", "gpu"], 3, r"device='auto'"),
    CliCase("nodata_nan_uint", "--nodata nan on a uint16 raster",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), *_cli_fast(env),
                              "--nodata", "nan"], 3, r"integer value"),
    CliCase("nodata_negative_uint", "--nodata -1 on a uint16 raster",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), *_cli_fast(env),
                              "--nodata", "-1"], 3, r"pick one in range"),
    CliCase("compress_typo", "--compress deflat (checked before the model runs)",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), *_cli_fast(env),
                              "--compress", "deflat"], 3, r"is not one of"),
    CliCase("output_is_input", "OUTPUT is the INPUT file",
            lambda env, out: ["inpaint", env.file("tif"), env.file("tif"), "--mask", env.file("inside_gpkg"),
                              *_cli_fast(env)], 2, r"same file as INPUT"),
    CliCase("output_is_input_overwrite", "OUTPUT is the INPUT file, with --overwrite",
            lambda env, out: ["inpaint", env.file("tif"), env.file("tif"), "--mask", env.file("inside_gpkg"),
                              *_cli_fast(env), "--overwrite"], 2, r"same file as INPUT"),
    CliCase("output_is_mask", "OUTPUT is the --mask raster",
            lambda env, out: ["remove-clouds", env.file("tif"), env.file("mask_tif"), "--mask",
                              env.file("mask_tif"), *_cli_fast(env), "--overwrite"], 2, r"same file as --mask"),
    CliCase("buffer_nan", "--buffer nan",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), *_cli_fast(env),
                              "--buffer", "nan"], 3, r"finite number of metres"),
    CliCase("threads_too_many", "--threads 100000",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), *_cli_fast(env),
                              "--threads", "100000"], 3, r"threads=None"),
    CliCase("tile_too_big", "--tile 1000000",
            lambda env, out: ["inpaint", env.file("tif"), out, "--mask", env.file("inside_gpkg"), *_cli_fast(env),
                              "--tile", "1000000"], 3, r"256-1024 pixels"),
    CliCase("config_does_not_parse", "train with a YAML config that does not parse",
            lambda env, out: ["train", env.file("bad_yaml")], 3, r"does not parse.*fix its syntax"),
    CliCase("config_wrong_types", "train with a YAML config of unknown keys / wrong types",
            lambda env, out: ["train", env.file("badtypes_yaml")], 3, r"unknown keys|must be"),
    CliCase("generate_gsd_tiny", "generate --gsd 1e-7",
            lambda env, out: ["generate", out, "--prompt", "x", "--bounds", "737145", "-2801055", "738145",
                              "-2800355", "--crs", "EPSG:32621", "--gsd", "1e-7", *_cli_fast(env)], 3,
            r"check gsd="),
]


# --------------------------------------------------------------------------- running a case
def run_case(env: Env, case: Case):
    """Run ``case``; returns ``(exception or None, result or None, warnings, inputs before, inputs after,
    work folder before, after)``."""
    inputs = case.make(env)
    before = {k: fingerprint(v) for k, v in inputs.items()}
    files_before = folder_state(env.work)
    exc = result = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = case.run(env, **inputs)
        except Exception as e:  # noqa: BLE001 - checked by the caller
            exc = e
    after = {k: fingerprint(v) for k, v in inputs.items()}
    geot2e_warnings = [w for w in caught if issubclass(w.category, E.Geot2eWarning)]
    return exc, result, geot2e_warnings, before, after, files_before, folder_state(env.work), inputs


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return Env(tmp_path_factory.mktemp("bad_inputs"))


def test_there_are_at_least_20_kinds():
    assert len({c.id for c in CASES}) == len(CASES) >= 20
    assert len({c.id for c in CLI_CASES}) == len(CLI_CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(env, case):
    exc, result, caught, before, after, files_before, files_after, inputs = run_case(env, case)
    if case.error is not None:
        assert exc is not None, f"{case.id}: no error raised"
        assert type(exc) is case.error, f"{case.id}: {type(exc).__name__}: {exc}"
        assert isinstance(exc, E.Geot2eError)
        assert re.search(case.hint, str(exc), re.S), f"{case.id}: no fix hint in: {exc}"
    else:
        assert exc is None, f"{case.id}: {type(exc).__name__}: {exc}"
        assert isinstance(result, xr.DataArray)
        if hasattr(result.data, "dask"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", E.Geot2eWarning)
                result = result.compute()
        if case.check is not None:
            case.check(env, result, **inputs)
    if case.warning is not None:
        ws = [w for w in caught if issubclass(w.category, case.warning)]
        assert ws, f"{case.id}: no {case.warning.__name__}"
        if case.hint and case.error is None:
            assert re.search(case.hint, str(ws[0].message)), str(ws[0].message)
    assert after == before, f"{case.id}: an input was mutated"
    assert files_after == files_before, f"{case.id}: files were written: {set(files_after) ^ set(files_before)}"


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_bad_command_line(env, case, capsys):
    from geot2e import cli

    work = env.work / f"cli_{case.id}"
    work.mkdir()
    for name in case.files:
        (work / name).write_bytes(b"precious")
    out = work / case.output
    files_before = folder_state(env.tmp)
    code = cli.main([str(a) for a in case.argv(env, out)])
    _, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.startswith("geot2e: error:")]
    assert code == case.code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(case.hint, lines[0]), lines[0]
    after = folder_state(env.tmp)
    assert [f for f in after if not f[0].startswith("inputs")] == \
        [f for f in files_before if not f[0].startswith("inputs")], "the CLI wrote files"
    if case.files:
        assert (work / case.files[0]).read_bytes() == b"precious"


def test_existing_output_is_untouched(env):
    """OutputExistsError leaves the existing file's bytes as they were."""
    import geot2e.io as gio

    p = env.work / "keep.tif"
    p.write_bytes(b"precious")
    with pytest.raises(E.OutputExistsError):
        gio.to_cog(env.da, p)
    assert p.read_bytes() == b"precious"


def test_prompt_naming_a_column_is_a_prompt_map_and_plain_text_stays_text(env, monkeypatch):
    """The typo check does not get in the way: an exact column name makes a prompt map, a text that
    is not close to a column name is a prompt, and the geometries alone take any text."""
    import geot2e.api as api

    seen = []
    import geot2e.engine.raster as engine_raster

    monkeypatch.setattr(engine_raster, "synthesize", lambda da, runs, **kw: seen.append([p for _, p in runs]))
    api.inpaint(env.da, env.polys, "prompt", **env.kw())
    api.inpaint(env.da, env.polys, "dense green forest", **env.kw())
    api.inpaint(env.da, env.polys.geometry, "promt", **env.kw())
    assert seen == [["a lake", "a forest"], ["dense green forest"], ["promt"]]


def test_read_only_folder_for_real(env):
    """Without root's override the folder's permission bits alone refuse the write."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root can write into read-only folders; covered by the simulated case")
    import geot2e.io as gio

    inputs = _ro_dir(env)
    with pytest.raises(E.OutputPathError):
        gio.to_cog(inputs["da"], inputs["path"])
