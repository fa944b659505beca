"""Dehazing by the scattering model's inversion (geot2e.models.haze): the physics is exact with
the true fields, the shipped network beats the dark channel prior on a held-out crop it never
saw, and the haze stage of `geot2e train` trains alone and adds its network beside a model
without touching the model or its other parts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rioxarray
import torch

import geot2e
from geot2e.eval.metrics import psnr, robust_range, to_unit
from geot2e.eval.translation import dark_channel_dehaze, haze
from geot2e.geo import Radiometry
from geot2e.models.haze import HAZE_DIR, HazeNet, has_haze_net, haze_net_info
from engine_helpers import tiny_train_config, train_beside_unchanged

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "geot2e" / "weights" / "default"


def test_inverting_the_scattering_model_with_its_true_fields_gives_the_ground_back(monkeypatch):
    rng = np.random.default_rng(0)
    ground = torch.from_numpy(rng.uniform(-1, 1, (2, 3, 40, 56)).astype(np.float32))
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 56), indexing="ij")
    t = (0.3 + 0.6 * (yy * xx))[None, None].repeat(2, 1, 1, 1)
    air = torch.tensor([0.8, 0.75, 0.85]).view(1, 3, 1, 1).expand(2, 3, 40, 56)   # near-white, model scale
    hazy = ground * t + air * (1 - t)
    net = HazeNet(8)
    monkeypatch.setattr(net, "fields", lambda x: (t, air))
    assert torch.allclose(net(hazy), ground, atol=1e-5)


@pytest.fixture(scope="module")
def model():
    if not has_haze_net(DEFAULT):
        pytest.fail("the default model ships its dehazing network (geot2e/weights/default/dehaze)")
    return geot2e.load_model("default", device="cpu", translate=True)


@pytest.fixture(scope="module")
def hazy_crop():
    """(clear, hazy): a held-out Landsat 224/077 crop (outside 224/078: never a training tile)
    and the evaluation's synthetic haze over it, in its digital numbers."""
    clear = rioxarray.open_rasterio(ROOT / "tests" / "data" / "landsat_224077_holdout_crop.tif").isel(
        x=slice(0, 128), y=slice(0, 128)).load()
    truth = clear.values.astype(np.float64)
    lo, hi = robust_range(truth)
    hazy01 = haze(np.clip(to_unit(truth, lo, hi), 0, 1), seed=3)
    return clear, clear.copy(data=np.round(hazy01 * (hi - lo).reshape(-1, 1, 1) + lo.reshape(-1, 1, 1))
                             .astype(clear.dtype))


def test_the_default_dehazes_a_heldout_crop_better_than_the_dark_channel_prior(model, hazy_crop):
    """The inversion, given the clear scene's scaling as the prior is, lands closer to the
    ground than the prior and than the hazy input, and leaves the clear crop nearly as it is;
    grid, CRS and dtype are the input's, the input is untouched, and K samples are one
    deterministic result (zero uncertainty)."""
    clear, hazy = hazy_crop
    truth = clear.values.astype(np.float64)
    lo, hi = robust_range(truth)
    span, off = (hi - lo).reshape(-1, 1, 1), lo.reshape(-1, 1, 1)
    hazy01 = (hazy.values.astype(np.float64) - off) / span
    before = hazy.copy(deep=True)
    out = geot2e.translate(hazy, "dehaze", model=model, radiometry=Radiometry.fit(clear), samples=2,
                           progress=False, threads=1)
    assert hazy.identical(before)
    assert out.shape == clear.shape and out.dtype == clear.dtype and out.rio.crs == clear.rio.crs
    assert out.rio.transform() == clear.rio.transform()
    assert float(out["uncertainty"].max()) == 0.0
    lazy = geot2e.translate(hazy.chunk({"x": 40, "y": 40}), "dehaze", model=model, radiometry=Radiometry.fit(clear),
                            samples=2, progress=False, threads=1, tile=64, overlap=16)
    tiled = geot2e.translate(hazy, "dehaze", model=model, radiometry=Radiometry.fit(clear), samples=2,
                             progress=False, threads=1, tile=64, overlap=16)
    assert hasattr(lazy.data, "dask") and np.array_equal(lazy.values, tiled.values)   # any chunking, same pixels
    m = np.ones(truth.shape[-2:], bool)

    def score(v):
        return psnr(to_unit(np.asarray(v, np.float64), lo, hi), to_unit(truth, lo, hi), m)

    ours, dcp = score(out.values), score(dark_channel_dehaze(hazy01) * span + off)
    assert ours > score(hazy.values) + 6
    assert ours > dcp + 1.0, (ours, dcp)
    # clear ground stays nearly as it is (a network trained on hazy tiles only raised its
    # contrast: 23-25 dB against itself)
    same = geot2e.translate(clear, "dehaze", model=model, radiometry=Radiometry.fit(clear), progress=False,
                            threads=1)
    assert score(same.values) > 30


def test_the_cli_takes_the_scaling_from_a_clear_raster(model, hazy_crop, tmp_path):
    from rio_cogeo.cogeo import cog_validate

    from geot2e.cli import main
    from geot2e.translation import scaling_of

    clear, hazy = hazy_crop
    src, ref, out = tmp_path / "hazy.tif", tmp_path / "clear.tif", tmp_path / "dehazed.tif"
    hazy.rio.to_raster(src)
    clear.rio.to_raster(ref)
    assert main(["translate", "dehaze", str(src), str(out), "--scaling-from", str(ref), "--no-progress",
                 "--threads", "1"]) == 0
    assert cog_validate(out, quiet=True)[0]
    want = geot2e.translate(hazy, "dehaze", model=model, radiometry=scaling_of(clear, "dehaze"), progress=False,
                            threads=1)
    got = geot2e.io.open_raster(out)
    assert np.array_equal(got.values, want.values) and got.rio.transform() == clear.rio.transform()
    own = geot2e.translate(hazy, "dehaze", model=model, progress=False, threads=1)   # its own percentiles
    assert np.abs(own.values.astype(float) - want.values).mean() > 100                # a different result
    assert geot2e.io.read_provenance(out)["geot2e_task"] == "dehaze"
    bad = tmp_path / "missing.tif"
    assert main(["translate", "dehaze", str(src), str(tmp_path / "x.tif"), "--scaling-from", str(bad)]) != 0
    assert not (tmp_path / "x.tif").exists()


def _haze_section(**kw):
    return {"steps": 3, "batch_size": 2, "lr": 0.001, "warmup": 1, "ema_decay": 0.9, "save_every": 2,
            "log_every": 1, "tile_sizes": [32], **kw}


def test_the_haze_stage_trains_alone_and_resumes(tmp_path):
    from geot2e.train import run_training

    cfg = tiny_train_config(tmp_path, haze=_haze_section())
    run_training(cfg, progress=False, stages=["haze"])
    run = tmp_path / "run"
    state = json.loads((run / "haze" / "state.json").read_text())
    assert state["step"] == 3 and all(np.isfinite(r["loss"]) for r in state["log"] if "loss" in r)
    assert json.loads((run / "haze" / "net" / "geot2e_haze.json").read_text())["steps"] == 3
    assert not (run / "vae").exists() and not (tmp_path / "exported").exists()   # no model stage, no export
    run_training(cfg, progress=False, stages=["haze"])                             # resumes: nothing left
    assert json.loads((run / "haze" / "state.json").read_text())["step"] == 3


def test_the_haze_stage_adds_its_network_beside_an_unchanged_model(tmp_path):
    """A config with only the haze stage on a base model exporting into the base's own folder
    (configs/dehaze.yaml on the default): the folder gets dehaze/, and every file that was
    there (model, ControlNet, student, modality adapters) keeps its bytes."""
    base, _ = train_beside_unchanged(tmp_path, DEFAULT, HAZE_DIR, "haze", _haze_section(steps=2))
    assert has_haze_net(base) and haze_net_info(base)["steps"] == 2
    m = geot2e.load_model(base, device="cpu", translate=True)
    assert m.haze_net is not None and m.controlnet is not None


def test_a_window_is_bent_onto_its_neighbours_pixels_where_they_meet():
    """Tiled, each window inverts with its own fields; where a neighbour already wrote pixels
    (mask 0) the result continues them instead of stepping away (a seam at cell edges)."""
    from geot2e.models.control import dehaze_tiles

    class Model:
        haze_net = HazeNet(8).eval()

    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        plain = dehaze_tiles(Model, x)
        mask = torch.ones(1, 1, 64, 64)
        mask[..., :16] = 0                                   # the left neighbour's pixels
        known = plain + 0.2                                  # its fields gave a brighter result there
        out = dehaze_tiles(Model, x, known=known, mask=mask)
    shift = (out - plain).mean((0, 1, 2))                   # per column
    assert shift[16] > 0.15                                 # next to the neighbour: its level, not a 0.2 step
    assert torch.equal(out[..., :16], plain[..., :16])      # the neighbour's pixels are not this window's to write
    assert torch.equal(dehaze_tiles(Model, x), plain)        # no neighbours: the inversion as it is
