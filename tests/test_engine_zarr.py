"""Zarr-to-Zarr processing with region writes and resume after an interruption."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import geot2e.io as gio
from engine_helpers import FAST, one_torch_thread, tiny_model, tiny_model_path  # noqa: F401
from geot2e.api import inpaint, process_zarr

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def src_store(landsat_da, tmp_path_factory):
    da = landsat_da.isel(y=slice(0, 128), x=slice(300, 428))
    path = tmp_path_factory.mktemp("zarr") / "src.zarr"
    gio.create_zarr_like(da, path, chunks=64)
    gio.write_zarr_region(da, path, region={"y": slice(0, 128), "x": slice(0, 128)})
    return da, path


@pytest.fixture(scope="module")
def mask(src_store):
    da, _ = src_store
    m = xr.zeros_like(da.isel(band=0, drop=True), dtype=bool)
    m[40:100, 10:120] = True
    return m


def test_process_zarr_equals_in_memory_result(src_store, mask, tiny_model_path, tmp_path):
    da, src = src_store
    ref = inpaint(da, mask, "a field", model=tiny_model_path, **FAST)
    dst = process_zarr(src, tmp_path / "dst.zarr", mask, "a field", model=tiny_model_path, **FAST)
    got = gio.open_zarr(dst).compute()
    assert np.array_equal(got.values, ref.values)
    np.testing.assert_array_equal(got["synthesized"].values, mask.values)
    assert got.rio.crs == da.rio.crs and got.rio.transform() == da.rio.transform()
    assert got.attrs.get("geot2e_operation") == "inpaint"
    assert len(gio.done_keys(dst)) == 4  # one ledger entry per 64 x 64 block


def test_resume_after_interruption_skips_finished_blocks(src_store, mask, tiny_model_path, tmp_path,
                                                         monkeypatch):
    da, src = src_store
    ref = inpaint(da, mask, "a field", model=tiny_model_path, **FAST)
    dst = tmp_path / "dst.zarr"
    real_write = gio.write_zarr_region
    written = []

    def failing_write(block, store, region="auto", **kw):
        if len(written) == 2:
            raise RuntimeError("simulated interruption")
        real_write(block, store, region=region, **kw)
        written.append(kw.get("done_key"))

    monkeypatch.setattr(gio, "write_zarr_region", failing_write)
    with pytest.raises(RuntimeError, match="simulated"):
        process_zarr(src, dst, mask, "a field", model=tiny_model_path, scheduler="sync", **FAST)
    assert len(gio.done_keys(dst)) == 2

    resumed = []

    def counting_write(block, store, region="auto", **kw):
        real_write(block, store, region=region, **kw)
        resumed.append(kw.get("done_key"))

    monkeypatch.setattr(gio, "write_zarr_region", counting_write)
    process_zarr(src, dst, mask, "a field", model=tiny_model_path, **FAST)
    assert len(resumed) == 2 and not set(resumed) & set(written)
    got = gio.open_zarr(dst).compute()
    assert np.array_equal(got.values, ref.values)
    np.testing.assert_array_equal(got["synthesized"].values, mask.values)
