"""Dask execution: lazy results, chunk invariance (numpy = any chunking = distributed)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import xarray as xr

from engine_helpers import FAST, InpaintSpy, one_torch_thread, tiny_model, tiny_model_path  # noqa: F401
from geot2e.api import inpaint, outpaint
from geot2e.engine.tiles import ModelRef

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scene(landsat_da):
    """128 x 192 uint16 crop and a mask over 5 of its 6 cells (with nodata in the window)."""
    da = landsat_da.isel(y=slice(0, 128), x=slice(300, 492))
    mask = xr.zeros_like(da.isel(band=0, drop=True), dtype=bool)
    mask[30:100, 20:110] = True
    mask[5:20, 150:180] = True
    return da, mask


@pytest.fixture(scope="module")
def reference(scene, tiny_model_path):
    da, mask = scene
    return inpaint(da, mask, "a lake", model=tiny_model_path, **FAST)


def test_dask_in_gives_lazy_dask_out(scene, tiny_model, tiny_model_path, monkeypatch):
    da, mask = scene
    spy = InpaintSpy(tiny_model)
    monkeypatch.setattr(tiny_model, "inpaint", spy)
    out = inpaint(da.chunk({"y": 64, "x": 64}), mask, "a lake", model=tiny_model_path, **FAST)
    import dask.array as dsa

    assert isinstance(out.data, dsa.Array)
    assert out.data.chunks == da.chunk({"y": 64, "x": 64}).data.chunks
    assert spy.calls == []  # nothing ran yet
    assert out.rio.crs == da.rio.crs and out.rio.transform() == da.rio.transform()
    assert "synthesized" in out.coords


@pytest.mark.parametrize("chunks", [{"y": 64, "x": 64}, {"y": 128, "x": 128}, {"y": 48, "x": 80},
                                    {"band": 1, "y": 100, "x": 37}])
def test_same_output_for_any_chunking(scene, reference, tiny_model_path, chunks):
    da, mask = scene
    out = inpaint(da.chunk(chunks), mask, "a lake", model=tiny_model_path, **FAST)
    got = out.compute(scheduler="threads")
    assert np.array_equal(got.values, reference.values)
    np.testing.assert_array_equal(got["synthesized"].values, mask.values)


def test_dask_mask_and_numpy_input(scene, reference, tiny_model_path):
    da, mask = scene
    out = inpaint(da, mask.chunk({"y": 50, "x": 50}), "a lake", model=tiny_model_path, **FAST)
    assert np.array_equal(out.values, reference.values)


def test_localcluster_threads_same_output(scene, reference, tiny_model_path):
    distributed = pytest.importorskip("distributed")
    da, mask = scene
    out = inpaint(da.chunk({"y": 64, "x": 96}), mask, "a lake", model=tiny_model_path, **FAST)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        got = client.compute(out).result()
    assert np.array_equal(got.values, reference.values)


def test_a_result_built_under_a_client_computes_again_and_again(scene, reference, tiny_model_path):
    """Built under a running client, the mask is scattered once and the graph references it;
    that reference must survive the graph's conversion to tasks, or the first compute fails
    with 'lost dependencies' (it did, in the cluster benchmark)."""
    distributed = pytest.importorskip("distributed")
    da, mask = scene
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        out = inpaint(da.chunk({"y": 64, "x": 96}), mask, "a lake", model=tiny_model_path, **FAST)
        first = client.compute(out.isel(y=slice(0, 64))).result()
        got = client.compute(out).result()
        again = client.compute(out).result()
    assert np.array_equal(got.values, reference.values) and np.array_equal(again.values, reference.values)
    assert np.array_equal(first.values, reference.values[:, :64])


@pytest.mark.slow
def test_localcluster_two_worker_processes_same_output(scene, reference, tiny_model_path):
    """Workers get a model *reference*: each process loads the checkpoint itself."""
    distributed = pytest.importorskip("distributed")
    da, mask = scene
    out = inpaint(da.chunk({"y": 64, "x": 64}), mask, "a lake", model=tiny_model_path, **FAST)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        got = client.compute(out).result()
    assert np.array_equal(got.values, reference.values)


def test_graph_holds_a_model_reference_not_weights(scene, tiny_model, tiny_model_path):
    ref = ModelRef(tiny_model, "cpu")
    clone = pickle.loads(pickle.dumps(ref))
    assert clone._model is None and clone.path == tiny_model.source
    assert clone.get() is tiny_model  # load_model's cache, as on a worker that loaded it once
    da, mask = scene
    out = inpaint(da.chunk({"y": 64, "x": 64}), mask, model=tiny_model_path, **FAST)
    import cloudpickle

    graph = dict(out.data.__dask_graph__())
    weights = sum(f.stat().st_size for f in tiny_model_path.glob("*.safetensors"))
    size = len(cloudpickle.dumps(graph))
    assert size < weights / 4, (size, weights)


def test_outpaint_dask_equals_numpy(scene, tiny_model_path):
    da, _ = scene
    small = da.isel(y=slice(0, 64), x=slice(0, 96))
    kw = dict(left=8, top=4, right=0, bottom=20, model=tiny_model_path, **FAST)
    a = outpaint(small, **kw)
    b = outpaint(small.chunk({"y": 32, "x": 32}), **kw)
    assert np.array_equal(a.values, b.compute().values)


def test_two_lazy_results_in_one_compute_do_not_share_keys(scene, tiny_model_path):
    """Graph keys are derived from everything a result depends on (here: the mask)."""
    import dask

    da, _ = scene
    small = da.isel(y=slice(0, 64), x=slice(0, 64))
    m1 = xr.zeros_like(small.isel(band=0, drop=True), dtype=bool)
    m2 = m1.copy()
    m1[10:20, 10:20] = True
    m2[30:50, 5:25] = True
    lazy = small.chunk({"y": 32, "x": 32})
    a, b = dask.compute(inpaint(lazy, m1, model=tiny_model_path, **FAST),
                        inpaint(lazy, m2, model=tiny_model_path, **FAST))
    assert np.array_equal(a.values, inpaint(small, m1, model=tiny_model_path, **FAST).values)
    assert np.array_equal(b.values, inpaint(small, m2, model=tiny_model_path, **FAST).values)


def test_thread_count_pinned_per_tile(scene):
    """Dask worker threads do not inherit the caller's torch thread count (OpenMP's is per
    thread) and kernels split reductions by it: the engine pins ``threads`` inside every
    tile, so numpy and threaded-dask runs agree bit for bit whatever the caller's setting.
    (The embedded model: with it 1 and 2 threads differ by up to 137 DN here; the random
    tiny model's small kernels happen not to.)"""
    import torch

    da, mask = scene
    chunked = da.chunk({"y": 64, "x": 64})
    # torch applies its global count to a thread at the thread's first parallel op only: warm
    # the scheduler's pool at 1 thread, then change the caller's count
    inpaint(chunked, mask, "a lake", model="default", **FAST).compute(scheduler="threads", num_workers=2)
    torch.set_num_threads(2)
    try:
        eager = inpaint(da, mask, "a lake", model="default", **FAST)
        lazy = inpaint(chunked, mask, "a lake", model="default", **FAST)
        got = lazy.compute(scheduler="threads", num_workers=2)
        assert torch.get_num_threads() == 2      # the pin is undone after each tile
    finally:
        torch.set_num_threads(1)
    assert eager.attrs["geot2e_threads"] == 2    # default: the caller's count, recorded
    assert np.array_equal(got.values, eager.values)
    one = inpaint(da, mask, "a lake", model="default", threads=1, **FAST)
    assert one.attrs["geot2e_threads"] == 1


def test_threads_option_validated(scene, tiny_model_path):
    from geot2e.errors import ParameterError

    da, mask = scene
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ParameterError, match="threads"):
            inpaint(da, mask, "a lake", model=tiny_model_path, threads=bad, **FAST)
