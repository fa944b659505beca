"""Safety: checkpoints only from safetensors + JSON, no network at run time, inputs never
mutated, nodata/attrs/band names preserved by every public function (and the CLI)."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import geot2e
import geot2e.api
import geot2e.io as gio
from engine_helpers import tiny_model, tiny_model_path  # noqa: F401
from geot2e.errors import CheckpointError
from geot2e.models import DEFAULT_WEIGHTS, from_pretrained, load_model

FAST = dict(tile=32, overlap=8, steps=1, guidance=0.0, progress=False)


# --------------------------------------------------------------------------- checkpoints
class _Exploit:
    """A pickle that runs code when loaded: it would create ``path``."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_loading_never_unpickles(tiny_model_path, monkeypatch):
    """A good checkpoint loads with torch.load and every pickle entry point disabled."""
    import torch

    def refuse(*a, **k):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    model = from_pretrained(tiny_model_path)
    assert model.bands == 3 and model.checkpoint_hash


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"])
def test_pickle_files_are_never_opened(tmp_path, suffix):
    marker = tmp_path / "code_ran"
    f = tmp_path / f"weights{suffix}"
    f.write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(CheckpointError, match="never loaded"):
        load_model(f, device="cpu")
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(f, folder / f"diffusion_pytorch_model{suffix}")
    (folder / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="never loaded"):
        load_model(folder, device="cpu")
    assert not marker.exists()


BAD_CONFIGS = {
    "class name key": lambda c: c.update(_class_name="diffusers.UNet2DConditionModel"),
    "target key": lambda c: c.update(_target_="builtins.eval"),
    "unknown section key": lambda c: c["unet"].update(cls="torch.nn.Module"),
    "object as value": lambda c: c.update(model_id={"__class__": "os.system"}),
    "class path as scheduler": lambda c: c["scheduler"].update(beta_schedule="diffusers.DDIMScheduler"),
    "class path as fill": lambda c: c.update(masked_fill="geot2e.models.fill.smooth_fill"),
    "unknown OpenCLIP arch": lambda c: c["text"].update(arch="os.system"),
    "pickle text weights": lambda c: c["text"].update(arch="ViT-B-32", pretrained="/tmp/open_clip.bin"),
    "string for an int": lambda c: c["vae"].update(latent_channels="4"),
    "strings in a float list": lambda c: c.update(trained_gsd_range=["0.3", "__import__('os')"]),
    "bool for an int": lambda c: c.update(bands=True),
    "non-finite float": lambda c: c["resolution"].update(gsd_min=float("nan")),
    "section not an object": lambda c: c.update(vae="AutoencoderKL"),
    "not an object": lambda c: (c.clear(), None),
}


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_config_json_accepts_only_known_plain_values(tiny_model_path, tmp_path, name):
    p = _copy(tiny_model_path, tmp_path / "m")
    cfg = json.loads((p / "config.json").read_text())
    BAD_CONFIGS[name](cfg)
    text = json.dumps(cfg) if cfg else "[1, 2]"
    (p / "config.json").write_text(text)
    with pytest.raises(CheckpointError):
        from_pretrained(p)


def test_a_resaved_checkpoint_loads_and_hashes_the_same(tiny_model, tmp_path):
    """The value checks accept what save_pretrained writes (round trip, same bytes)."""
    from geot2e.models import checkpoint_hash, save_pretrained

    p = save_pretrained(tiny_model, tmp_path / "again")
    assert checkpoint_hash(p) == tiny_model.checkpoint_hash
    assert from_pretrained(p).config == tiny_model.config


# --------------------------------------------------------------------------- no network
@pytest.fixture
def no_network(monkeypatch):
    """Every internet socket operation raises and is recorded (local AF_UNIX sockets still work)."""
    attempts = []

    def blocked(name):
        def fn(*a, **k):
            attempts.append((name, a[1:2] if name.startswith("socket.") else a[:1]))
            raise OSError(f"network access attempted at run time: {name}{a[1:2]}")
        return fn

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            return blocked("socket.connect")(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            return blocked("socket.connect_ex")(self, address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", blocked("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", blocked("getaddrinfo"))
    return attempts


def test_full_pipeline_runs_with_the_network_blocked(no_network, landsat_da, polygons_path, tiny_model_path,
                                                     tmp_path, monkeypatch):
    """Load a model from a local folder (the embedded default when present), remove clouds on
    the real test crop, write a COG: no socket is ever opened."""
    from geot2e.models import checkpoint

    monkeypatch.setattr(checkpoint, "_CACHE", {})  # really load from disk, under the block
    with pytest.raises(OSError, match="network access attempted"):
        socket.create_connection(("example.com", 80))  # the block is active
    no_network.clear()
    use_default = (DEFAULT_WEIGHTS / "config.json").is_file()
    model = geot2e.load_model("default" if use_default else str(tiny_model_path), device="cpu")
    da = landsat_da.isel(y=slice(0, 96), x=slice(0, 96))
    mask = xr.zeros_like(da.isel(band=0, drop=True), dtype=bool)
    mask[30:60, 40:70] = True
    out = geot2e.remove_clouds(da, mask, model=model, **FAST)
    path = gio.to_cog(out, tmp_path / "filled.tif")
    back = gio.open_raster(path)
    assert no_network == []
    assert np.array_equal(back.values, out.values)
    assert back.rio.crs == da.rio.crs and bool(back["synthesized"].any())


# --------------------------------------------------------------------------- nothing mutated
def fingerprint(obj):
    """Values, dtype, dims, coords, attrs, encoding and dask graph name of an input."""
    if isinstance(obj, xr.DataArray):
        vals = np.asarray(obj.values)
        return (hashlib.sha256(vals.tobytes()).hexdigest(), vals.dtype.str, obj.dims, obj.name,
                {k: (hashlib.sha256(np.ascontiguousarray(c.values).tobytes()).hexdigest(), repr(c.attrs))
                 for k, c in obj.coords.items()},
                repr(obj.attrs), repr(obj.encoding), getattr(obj.data, "name", None))
    import geopandas as gpd

    if isinstance(obj, gpd.GeoDataFrame):
        return ([g.wkb for g in obj.geometry], str(obj.crs), obj.drop(columns=obj.geometry.name).to_dict("list"))
    if isinstance(obj, np.ndarray):
        return hashlib.sha256(obj.tobytes()).hexdigest(), obj.dtype.str, obj.shape
    raise TypeError(type(obj))


def store_fingerprint(path: Path):
    return sorted((str(p.relative_to(path)), hashlib.sha256(p.read_bytes()).hexdigest())
                  for p in path.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def crop(landsat_da):
    """64 x 96 real crop with nodata pixels (top rows), a SOURCE attr, band = red/green/blue."""
    da = landsat_da.isel(y=slice(0, 64), x=slice(280, 376)).copy()
    da.attrs["units"] = "DN"
    return da


@pytest.fixture(scope="module")
def qa(crop):
    """A Landsat QA_PIXEL band with a cloud (bit 3) block, on the crop's grid."""
    q = xr.zeros_like(crop.isel(band=0, drop=True), dtype=np.uint16) + np.uint16(1 << 6)  # clear
    q[20:40, 30:60] = 1 << 3
    q = q.rio.write_nodata(1)
    q.attrs["long_name"] = "QA_PIXEL"
    return q


@pytest.fixture(scope="module")
def gdf(crop):
    import geopandas as gpd
    import shapely

    left, bottom, right, top = crop.rio.bounds()
    return gpd.GeoDataFrame({"prompt": ["a lake", "a town"]},
                            geometry=[shapely.box(left + 600, bottom + 300, left + 1500, bottom + 900),
                                      shapely.box(right - 900, top - 900, right - 300, top - 300)],
                            crs=crop.rio.crs).to_crs("EPSG:4326")


def _calls(model):
    """Every public function, called on (raster, mask, geometries, qa); each returns a result or None."""
    return {
        "gsd": lambda da, m, g, q, tmp: geot2e.gsd(da),
        "gsd_per_axis": lambda da, m, g, q, tmp: geot2e.gsd(da, per_axis=True),
        "geometry_mask": lambda da, m, g, q, tmp: geot2e.geometry_mask(g, like=da, buffer_m=30.0),
        "cloud_mask": lambda da, m, g, q, tmp: geot2e.cloud_mask(q, buffer_m=30.0),
        "remove_clouds": lambda da, m, g, q, tmp: geot2e.remove_clouds(da, m, model=model, **FAST),
        "inpaint": lambda da, m, g, q, tmp: geot2e.inpaint(da, m, "a lake", model=model, **FAST),
        "inpaint_geoms": lambda da, m, g, q, tmp: geot2e.inpaint(da, g, "a lake", model=model, **FAST),
        "inpaint_prompt_map": lambda da, m, g, q, tmp: geot2e.inpaint(da, g, "prompt", model=model, **FAST),
        "inpaint_samples": lambda da, m, g, q, tmp: geot2e.inpaint(da, m, model=model, samples=2, **FAST),
        "outpaint": lambda da, m, g, q, tmp: geot2e.outpaint(da, right=8, top=4, model=model, **FAST),
        "generate_like": lambda da, m, g, q, tmp: geot2e.generate("a lake", like=da, model=model, **FAST),
        "to_cog": lambda da, m, g, q, tmp: gio.to_cog(da, tmp / "out.tif"),
        "accessor_inpaint": lambda da, m, g, q, tmp: da.t2e.inpaint(m, "a lake", model=model, **FAST),
    }


CALLS = list(_calls(None))


@pytest.mark.parametrize("backend", ["numpy", "dask"])
@pytest.mark.parametrize("name", CALLS)
def test_inputs_are_never_mutated(crop, qa, gdf, tiny_model_path, tmp_path, name, backend):
    da = crop.copy(deep=True)
    mask = xr.zeros_like(da.isel(band=0, drop=True), dtype=bool)
    mask[10:50, 20:70] = True  # covers nodata pixels too
    q = qa.copy(deep=True)
    if backend == "dask":
        da, mask, q = da.chunk({"y": 32, "x": 48}), mask.chunk({"y": 32, "x": 48}), q.chunk({"y": 32, "x": 48})
    g = gdf.copy()
    before = [fingerprint(v) for v in (da, mask, g, q)]
    result = _calls(str(tiny_model_path))[name](da, mask, g, q, tmp_path)
    if isinstance(result, xr.DataArray):
        result.compute()
    assert [fingerprint(v) for v in (da, mask, g, q)] == before


def test_process_zarr_never_touches_its_source(crop, tiny_model_path, tmp_path):
    src = tmp_path / "src.zarr"
    gio.create_zarr_like(crop, src, chunks=32)
    gio.write_zarr_region(crop, src, region={"y": slice(0, 64), "x": slice(0, 96)})
    before = store_fingerprint(src)
    mask = np.zeros((64, 96), bool)
    mask[10:50, 20:70] = True
    dst = geot2e.api.process_zarr(src, tmp_path / "dst.zarr", mask, "a lake", model=tiny_model_path, **FAST)
    assert store_fingerprint(src) == before
    out = gio.open_zarr(dst)
    assert out.rio.nodata == crop.rio.nodata and out.dtype == crop.dtype
    assert [str(b) for b in out["band"].values] == [str(b) for b in crop["band"].values]
    assert out.attrs["SOURCE"] == crop.attrs["SOURCE"] and out.attrs["units"] == "DN"


# --------------------------------------------------------------------------- metadata preserved
RASTER_CALLS = ["remove_clouds", "inpaint", "inpaint_geoms", "inpaint_prompt_map", "inpaint_samples", "outpaint",
                "generate_like", "accessor_inpaint"]


@pytest.mark.parametrize("backend", ["numpy", "dask"])
@pytest.mark.parametrize("name", RASTER_CALLS)
def test_nodata_attrs_and_band_names_preserved(crop, qa, gdf, tiny_model_path, tmp_path, name, backend):
    da = crop if backend == "numpy" else crop.chunk({"y": 32, "x": 48})
    mask = xr.zeros_like(crop.isel(band=0, drop=True), dtype=bool)
    mask[10:50, 20:70] = True
    out = _calls(str(tiny_model_path))[name](da, mask, gdf, qa, tmp_path)
    assert out.rio.nodata == crop.rio.nodata == 0
    assert out.dtype == crop.dtype and out.dims == crop.dims
    assert list(out["band"].values) == ["red", "green", "blue"]
    assert out.rio.crs == crop.rio.crs
    for k, v in crop.attrs.items():
        assert k in out.attrs and np.array_equal(np.asarray(out.attrs[k]), np.asarray(v)), k
    assert out.attrs["geot2e_model_id"] and out.attrs["geot2e_checkpoint_hash"]
    assert hasattr(out.data, "dask") == (backend == "dask")
    if name != "outpaint":
        assert out.rio.transform() == crop.rio.transform()
        if name != "generate_like":  # outside the mask: bit-identical (nodata stays nodata)
            keep = ~np.asarray(out["synthesized"].values)
            assert np.array_equal(np.asarray(out.values)[:, keep], crop.values[:, keep])


def test_metadata_survives_the_cog_round_trip(crop, tiny_model_path, tmp_path):
    mask = xr.zeros_like(crop.isel(band=0, drop=True), dtype=bool)
    mask[10:50, 20:70] = True
    out = geot2e.inpaint(crop, mask, "a lake", model=str(tiny_model_path), **FAST)
    back = gio.open_raster(gio.to_cog(out, tmp_path / "out.tif"))
    assert back.rio.nodata == 0 and back.dtype == crop.dtype
    assert back.attrs.get("long_name") == ("red", "green", "blue")
    assert back.attrs["SOURCE"] == crop.attrs["SOURCE"] and back.attrs["units"] == "DN"
    assert back.attrs["geot2e_checkpoint_hash"] == out.attrs["geot2e_checkpoint_hash"]
    assert np.array_equal(back.values, out.values)
    np.testing.assert_array_equal(back["synthesized"].values, mask.values)


def test_metadata_survives_the_cli(crop, tiny_model_path, tmp_path, capsys):
    """Through the command line: nodata, band names, tags and the unmasked pixels come back."""
    import geopandas as gpd
    import shapely

    from geot2e import cli

    src = tmp_path / "in.tif"
    gio.to_cog(crop, src)
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    left, bottom, right, top = crop.rio.bounds()
    vec = tmp_path / "clouds.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.box(left + 600, bottom + 300, left + 1500, bottom + 900)],
                     crs=crop.rio.crs).to_file(vec)
    out = tmp_path / "out.tif"
    code = cli.main(["remove-clouds", str(src), str(out), "--mask", str(vec), "--model", str(tiny_model_path),
                     "--tile", "32", "--overlap", "8", "--steps", "1", "--guidance", "0", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before  # the input file is untouched
    back = gio.open_raster(out)
    assert back.rio.nodata == 0 and back.dtype == crop.dtype
    assert back.attrs.get("long_name") == ("red", "green", "blue")
    assert back.attrs["SOURCE"] == crop.attrs["SOURCE"] and back.attrs["units"] == "DN"
    keep = ~back["synthesized"].values
    assert keep.sum() < keep.size
    assert np.array_equal(back.values[:, keep], crop.values[:, keep])
