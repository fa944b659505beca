"""geot2e.io.uncertainty: the per-pixel spread of a samples=K result written next to the result
(COG or Zarr), on its grid, with its provenance; refused for samples=1 results."""
from __future__ import annotations

import numpy as np
import pytest

import geot2e
from geot2e.errors import OutputExistsError, ParameterError
from geot2e.io.uncertainty import companion_path, uncertainty_of, write_uncertainty


@pytest.fixture
def result(landsat_da):
    da = landsat_da.isel(y=slice(0, 64), x=slice(0, 96))
    rng = np.random.default_rng(0)
    unc = np.zeros(da.shape, dtype="float32")
    unc[:, 10:30, 20:50] = rng.uniform(0, 400, (3, 20, 30))
    da = da.assign_coords(uncertainty=(da.dims, unc), synthesized=(("y", "x"), unc[0] > 0))
    da.attrs.update(geot2e_samples=4, geot2e_operation="remove_clouds")
    return da


def test_companion_paths():
    assert companion_path("out/filled.tif").as_posix() == "out/filled.uncertainty.tif"
    assert companion_path("filled.zarr").name == "filled.uncertainty.zarr"
    assert companion_path("filled").name == "filled.uncertainty.tif"


def test_written_next_to_a_cog_on_the_same_grid(result, tmp_path):
    path = write_uncertainty(result, tmp_path / "filled.tif")
    assert path == tmp_path / "filled.uncertainty.tif"
    back = geot2e.io.open_raster(path)
    assert back.dtype == np.float32 and back.shape == result.shape
    assert back.rio.crs == result.rio.crs and back.rio.transform() == result.rio.transform()
    np.testing.assert_array_equal(back.values, result.uncertainty.values)
    assert geot2e.io.read_provenance(path)["geot2e_samples"] == 4
    with pytest.raises(OutputExistsError):
        write_uncertainty(result, tmp_path / "filled.tif")
    write_uncertainty(result, tmp_path / "filled.tif", overwrite=True)


def test_written_next_to_a_zarr_store(result, tmp_path):
    path = write_uncertainty(result.chunk({"x": 32, "y": 32}), tmp_path / "filled.zarr", blocksize=32)
    assert path.name == "filled.uncertainty.zarr"
    back = geot2e.io.open_zarr(path)
    np.testing.assert_array_equal(np.asarray(back.values), result.uncertainty.values)
    assert back.rio.crs == result.rio.crs


def test_a_one_sample_result_has_none(landsat_da):
    with pytest.raises(ParameterError, match="samples=K"):
        uncertainty_of(landsat_da)
