"""Faults survived: a dask.distributed worker killed mid-run, a Zarr-to-Zarr job SIGKILLed
mid-run, a training run SIGKILLed mid-run, a COG write that fails half way.

Each test compares with an undisturbed run: nothing lost, nothing corrupt, nothing left
behind. Every process killed here is one the test started itself (by its pid).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import geot2e.io as gio
from engine_helpers import tiny_model_path  # noqa: F401
from geot2e.api import inpaint, process_zarr

ROOT = Path(__file__).resolve().parents[1]
#: tiny, fast engine settings (one denoising step, no guidance pass)
FAST = dict(tile=32, overlap=8, steps=1, guidance=0.0, progress=False)


@pytest.fixture(scope="module")
def scene(landsat_da):
    """96 x 96 real Landsat crop (uint16, nodata 0 in the top rows) and a mask over its 9 tiles."""
    da = landsat_da.isel(y=slice(0, 96), x=slice(300, 396))
    mask = xr.zeros_like(da.isel(band=0, drop=True), dtype=bool)
    mask[20:80, 10:90] = True
    return da, mask


@pytest.fixture(scope="module")
def reference(scene, tiny_model_path):
    """The undisturbed, in-memory result."""
    da, mask = scene
    return inpaint(da, mask, "farmland", model=tiny_model_path, **FAST)


def _wait_for(pred, proc: subprocess.Popen, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the subprocess ended (code {proc.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _run_and_kill(script: str, tmp_path: Path, ready, what: str, timeout: float = 600.0):
    """Start ``script`` in a subprocess, SIGKILL it (by its own pid) once ``ready()`` holds."""
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(script))
    log = open(tmp_path / "job.log", "w")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-W", "ignore", str(path)], stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    try:
        value = _wait_for(ready, proc, timeout, what)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "job.log").read_text()[-2000:]
    return value


# --------------------------------------------------------------------------- (a) lost worker
try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover - distributed is a dependency
    WorkerPlugin = object


class KillFirstPassB(WorkerPlugin):
    """Worker plugin: the first pass-B tile task anywhere in the cluster kills its own worker
    process (SIGKILL to its own pid), after pass-A results exist in worker memory. A flag
    file makes it happen once; the restarted worker runs normally."""

    def __init__(self, flag: str):
        self.flag = flag

    def setup(self, worker):
        import geot2e.engine.tiles as tiles

        real = tiles.run_batch
        if getattr(real, "_kills_once", False):
            return
        flag = self.flag

        def run_batch(job, items, blocks, offsets, mblocks, context_values=(), context_bounds=()):
            if len(context_values):
                try:
                    fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass
                else:
                    os.write(fd, str(os.getpid()).encode())
                    os.close(fd)
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(job, items, blocks, offsets, mblocks, context_values, context_bounds)

        run_batch._kills_once = True
        tiles.run_batch = run_batch  # tasks name the function by module and name: they find this one


@pytest.mark.slow
def test_worker_killed_mid_run_gives_identical_output(scene, reference, tiny_model_path, tmp_path):
    distributed = pytest.importorskip("distributed")
    da, mask = scene
    flag = tmp_path / "killed.pid"
    out = inpaint(da.chunk({"y": 64, "x": 64}), mask, "farmland", model=tiny_model_path, **FAST)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        client.register_plugin(KillFirstPassB(str(flag)), name="kill-first-pass-b")
        pids_before = set(client.run(os.getpid).values())
        got = client.compute(out).result(timeout=600)
        client.wait_for_workers(2, timeout=120)
        pids_after = set(client.run(os.getpid).values())
    killed = int(flag.read_text())
    assert killed in pids_before and killed not in pids_after  # a worker really died mid-run
    assert np.array_equal(got.values, reference.values)
    np.testing.assert_array_equal(got["synthesized"].values, mask.values)


# --------------------------------------------------------------------------- (b) Zarr job SIGKILLed
ZARR_JOB = """
import sys, time
import numpy as np
import geot2e.io as gio
from geot2e.api import process_zarr

real = gio.write_zarr_region

def slow_write(*a, **k):  # a slower disk: leaves time to kill the job between/while writing blocks
    real(*a, **k)
    time.sleep(0.3)

gio.write_zarr_region = slow_write
process_zarr({src!r}, {dst!r}, np.load({mask!r}), "farmland", model={model!r}, scheduler="sync",
             tile=32, overlap=8, steps=1, guidance=0.0)
print("FINISHED")
"""


@pytest.mark.slow
def test_zarr_job_sigkilled_resumes_and_equals_uninterrupted(scene, reference, tiny_model_path, tmp_path,
                                                             monkeypatch):
    da, mask = scene
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    gio.create_zarr_like(da, src, chunks=32)
    gio.write_zarr_region(da, src, region={"y": slice(0, 96), "x": slice(0, 96)})
    np.save(tmp_path / "mask.npy", mask.values)
    n_blocks = 9  # 32 x 32 chunks
    script = ZARR_JOB.format(src=str(src), dst=str(dst), mask=str(tmp_path / "mask.npy"), model=str(tiny_model_path))
    done_at_kill = _run_and_kill(script, tmp_path, lambda: len(gio.done_keys(dst)) >= 3 and gio.done_keys(dst),
                                 "3 blocks were written")
    done = gio.done_keys(dst)
    assert done >= done_at_kill and 3 <= len(done) < n_blocks, done

    # no corrupt chunk: the whole store decodes; every block the ledger calls done holds the final values
    partial = gio.open_zarr(dst).compute()
    ref = reference.values
    for key in done:
        a, b = (int(v) for v in key.split("_"))
        ys, xs = slice(32 * a, 32 * a + 32), slice(32 * b, 32 * b + 32)
        assert np.array_equal(partial.values[:, ys, xs], ref[:, ys, xs]), key
    # a chunk write cut by the kill leaves zarr's '<chunk>.<uuid>.partial' temporary: resume removes it
    (dst / "data" / "c").mkdir(parents=True, exist_ok=True)
    (dst / "data" / "c" / "0.deadbeef.partial").write_bytes(b"half a chunk")

    written = []
    real = gio.write_zarr_region

    def counting(block, store, region="auto", **kw):
        real(block, store, region=region, **kw)
        written.append(kw.get("done_key"))

    monkeypatch.setattr(gio, "write_zarr_region", counting)
    process_zarr(src, dst, mask, "farmland", model=tiny_model_path, **FAST)
    assert len(written) == n_blocks - len(done)  # finished blocks were skipped, each other block written once
    assert not set(written) & done and len(set(written)) == len(written)
    assert len(gio.done_keys(dst)) == n_blocks
    assert not list(dst.rglob("*.partial"))
    final = gio.open_zarr(dst).compute()
    assert np.array_equal(final.values, ref)
    np.testing.assert_array_equal(final["synthesized"].values, mask.values)
    assert final.rio.crs == da.rio.crs and final.rio.transform() == da.rio.transform()


# --------------------------------------------------------------------------- (c) training SIGKILLed
TRAIN_JOB = """
import time
import torch
from geot2e.models import Text2Earth, tiny_config
from geot2e.train import StageConfig, TileDataset, load_raster_source, train_denoiser

class Slow:  # a slower machine: leaves time to kill the run between checkpoints
    def __init__(self, ds):
        self.ds, self.size = ds, ds.size
    def batch(self, rng, n, **kw):
        time.sleep(0.3)
        return self.ds.batch(rng, n, **kw)

ds = TileDataset([load_raster_source({crop!r}, nodata=0)], size=32, gsd_max=120.0)
torch.manual_seed(0)
cfg = StageConfig(**{cfg!r})
train_denoiser(Text2Earth(tiny_config()), Slow(ds), cfg, {out!r}, progress=False)
print("FINISHED")
"""


@pytest.mark.slow
def test_training_sigkilled_resumes_from_last_checkpoint(data_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    from geot2e.models import Text2Earth, tiny_config
    from geot2e.train import StageConfig, TileDataset, load_raster_source, train_denoiser

    cfg = dict(steps=10, batch_size=2, lr=1e-3, warmup=1, bf16=False, log_every=1, save_every=2, ema_decay=0.9)
    crop = data_dir / "landsat_224078_rgb_crop.tif"
    out = tmp_path / "run"
    state = out / "denoiser" / "state.json"

    def saved_step():
        try:
            return json.loads(state.read_text())["step"]
        except (OSError, ValueError, KeyError):
            return 0

    script = TRAIN_JOB.format(crop=str(crop), cfg=cfg, out=str(out))
    _run_and_kill(script, tmp_path, lambda: saved_step() >= 4, "the step-4 checkpoint")
    at_kill = json.loads(state.read_text())
    saved = at_kill["step"]
    assert 4 <= saved < cfg["steps"]
    assert (out / "denoiser" / "model" / "config.json").is_file()  # the checkpoint is complete and loadable

    ds = TileDataset([load_raster_source(crop, nodata=0)], size=32, gsd_max=120.0)
    torch.manual_seed(0)
    log = train_denoiser(Text2Earth(tiny_config()), ds, StageConfig(**cfg), out, progress=False)
    steps = [e["step"] for e in log]
    assert steps == list(range(1, cfg["steps"] + 1))  # the step counter continued: none lost or repeated
    assert log[:saved] == at_kill["log"]  # the first steps are the killed run's, not a fresh start
    st = json.loads(state.read_text())
    assert st["step"] == cfg["steps"]
    t = load_file(str(out / "denoiser" / "state.safetensors"))
    assert {float(v) for k, v in t.items() if k.startswith("opt.") and k.endswith(".step")} == {cfg["steps"]}


# --------------------------------------------------------------------------- (d) failed COG write
def _boom(block):
    raise RuntimeError("disk read failed half way")


def _failing(da: xr.DataArray, *, fail_block: tuple[int, int] = (1, 1)) -> xr.DataArray:
    """``da`` on 32 x 32 dask chunks whose block ``fail_block`` raises when computed."""
    import dask.array as dsa

    lazy = da.chunk({"band": -1, "y": 32, "x": 32})
    data = lazy.data

    def maybe_fail(block, block_info=None):
        loc = block_info[0]["chunk-location"]
        if tuple(loc[1:]) == fail_block:
            _boom(block)
        return block

    return lazy.copy(data=dsa.map_blocks(maybe_fail, data, dtype=data.dtype))


def test_cog_write_failing_in_a_dask_block_leaves_nothing(scene, tmp_path):
    da, _ = scene
    dest = tmp_path / "out.tif"
    with pytest.raises(RuntimeError, match="half way"):
        gio.to_cog(_failing(da), dest, blocksize=32)
    assert sorted(os.listdir(tmp_path)) == []  # no destination, no temporaries


def test_cog_overwrite_failing_keeps_the_old_file(scene, tmp_path):
    da, _ = scene
    dest = tmp_path / "out.tif"
    gio.to_cog(da, dest, blocksize=32)
    before = dest.read_bytes()
    with pytest.raises(RuntimeError, match="half way"):
        gio.to_cog(_failing(da, fail_block=(2, 2)), dest, overwrite=True, blocksize=32)
    assert dest.read_bytes() == before  # the old file is intact (the new one replaces it only when complete)
    assert sorted(os.listdir(tmp_path)) == ["out.tif"]


def test_cog_write_failing_late_leaves_nothing(scene, tmp_path, monkeypatch):
    """The folder turns read-only (or fills up) after the blocks were written, while GDAL's COG
    driver writes the final file."""
    import rasterio.shutil

    da, _ = scene
    dest = tmp_path / "out.tif"

    def copy(src, dst, **kw):
        Path(dst).write_bytes(b"half a COG")
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(rasterio.shutil, "copy", copy)
    with pytest.raises(PermissionError):
        gio.to_cog(da, dest, blocksize=32)
    assert sorted(os.listdir(tmp_path)) == []


def test_cog_write_failing_on_replace_leaves_nothing(scene, tmp_path, monkeypatch):
    """The very last step (the atomic rename onto the destination) fails."""
    da, _ = scene
    dest = tmp_path / "out.tif"
    real = os.replace

    def replace(a, b, *args, **kw):
        if Path(b) == dest:
            raise OSError(28, "No space left on device")
        return real(a, b, *args, **kw)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space"):
        gio.to_cog(da, dest, blocksize=32)
    assert sorted(os.listdir(tmp_path)) == []
