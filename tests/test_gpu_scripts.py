"""scripts/make_gpu_pack.py, train_gpu.py, train_gpu_decoder.py, merge_gpu_weights.py: training the
denoiser or the decoder on a machine without the raster stack (a lent GPU), from a self-contained pack."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from script_helpers import ROOT, load_script, tiny_train_config

from geot2e.models import Text2Earth, from_pretrained, save_pretrained, tiny_config

pytestmark = pytest.mark.filterwarnings("ignore::geot2e.errors.PromptTruncatedWarning")

HOLDOUT = ROOT / "tests" / "data" / "landsat_224077_holdout_crop.tif"


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu")
    torch.manual_seed(0)
    base = tmp / "base"
    save_pretrained(Text2Earth(tiny_config()), base)
    cfg = tiny_train_config(tmp)
    out = tmp / "pack"
    assert load_script("make_gpu_pack").main([str(base), str(cfg), str(out), "--val-crops", "2",
                                              "--val-scene", str(HOLDOUT)]) == 0
    return base, cfg, out


def _run_without_geo_stack(script: str, args, cwd) -> None:
    """Run scripts/SCRIPT on CPU in a fresh interpreter where the geo libraries cannot be
    imported (the GPU machine has torch, diffusers and open_clip but none of them)."""
    argv = [str(x) for x in args] + ["--device", "cpu", "--workers", "0", "--batch", "2", "--lr", "1e-3",
                                     "--warmup", "1", "--ema", "0.5"]
    code = ("import sys\n"
            "for name in ('rasterio', 'rioxarray', 'pyproj', 'xarray', 'geopandas', 'shapely', 'dask', 'zarr'):\n"
            "    sys.modules[name] = None   # import fails, find_spec says: not installed\n"
            f"sys.argv = [{script!r}] + {argv!r}\n"
            f"import runpy; runpy.run_path({str(ROOT / 'scripts' / script)!r}, run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, cwd=str(cwd))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def test_pack_holds_the_sources_exactly_and_the_encoder_only(pack):
    base, cfg, out = pack
    from safetensors.torch import load_file

    from geot2e.train.config import load_train_config
    from geot2e.train.dataset import load_raster_source

    tg = load_script("train_gpu")
    meta = json.loads((out / "pack.json").read_text())
    got = tg.load_sources(out, meta)
    c = load_train_config(cfg)
    for s, src in zip(c.sources, got):
        want = load_raster_source(s.path, bands=s.bands, nodata=s.nodata, nir_band=s.nir_band)
        assert np.array_equal(want.data, src.data)            # lossless, raw units
        assert np.array_equal(want.valid, src.valid)          # nodata kept out
        assert np.allclose(want.low, src.low) and np.allclose(want.high, src.high)
        assert src.gsd == pytest.approx(want.gsd) and src.nir_band == want.nir_band
    assert not np.array_equal(got[0].valid, np.ones_like(got[0].valid))   # the Landsat crop has nodata
    enc = load_file(str(out / "vae_encoder.safetensors"))
    assert enc and all(k.startswith(("encoder.", "quant_conv.")) for k in enc)
    assert meta["val"]["shape"] == [4, 3, 64, 64] and len(meta["val"]["captions"]) == 4
    assert sorted(meta["val"]["gsd"]) == [30.0, 30.0, 60.0, 60.0]


def test_train_gpu_runs_without_the_raster_stack_and_merges_back(pack, tmp_path):
    base, _, out = pack
    run = tmp_path / "run"
    _run_without_geo_stack("train_gpu.py", [base, out, run, "--sizes", "64", "--max-steps", "3", "--val-every", "0"],
                           tmp_path)
    log = json.loads((run / "log.json").read_text())
    assert log["steps"] == 3 and "error" not in log
    assert len(log["val"]) >= 2 and all(np.isfinite(v["loss"]) for v in log["val"])
    assert log["best_val"] == min(v["loss"] for v in log["val"])    # the best EMA weights were kept
    dest = tmp_path / "merged"
    assert load_script("merge_gpu_weights").main([str(run), str(base), str(dest), "--model-id", "gpu-test"]) == 0
    m0, m1 = from_pretrained(base), from_pretrained(dest)
    assert m1.model_id == "gpu-test"
    a, b = m0.vae.state_dict(), m1.vae.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-3) for k in a)           # VAE as the base's (float16 copy)
    a, b = m0.unet.state_dict(), m1.unet.state_dict()
    changed = log["best_step"] > 0
    assert changed == any(not torch.allclose(a[k], b[k], atol=1e-3) for k in a)


def test_train_gpu_class_balance_window_stretch_and_save_last(pack, tmp_path):
    """``--class-balance`` and ``--window-stretch`` reach the tile stream and ``--save-last``
    hands back the last EMA weights even when an earlier validation was lower."""
    base, _, out = pack
    run = tmp_path / "run"
    _run_without_geo_stack("train_gpu.py", [base, out, run, "--sizes", "64", "--max-steps", "2", "--val-every", "0",
                                            "--class-balance", "1", "--window-stretch", "0", "--save-last"], tmp_path)
    log = json.loads((run / "log.json").read_text())
    assert "error" not in log and log["args"]["class_balance"] == 1.0 and log["args"]["window_stretch"] == 0.0
    assert log["best_step"] == log["steps"] == 2
    assert log["best_val"] == log["val"][-1]["loss"]


def test_merge_refuses_a_folder_without_shards(pack, tmp_path):
    base, _, _ = pack
    with pytest.raises(SystemExit, match="no unet.N.safetensors"):
        load_script("merge_gpu_weights").main([str(tmp_path), str(base), str(tmp_path / "x")])


def test_train_gpu_decoder_snapshots_merge_with_the_encoder_and_denoiser_kept(pack, tmp_path):
    base, _, out = pack
    run = tmp_path / "dec"
    _run_without_geo_stack("train_gpu_decoder.py", [base, out, run, "--max-steps", "4", "--snapshots", "2",
                                                    "--disc-start", "2", "--critic-warmup", "1"], tmp_path)
    log = json.loads((run / "log.json").read_text())
    assert [s["step"] for s in log["snapshots"]] == [2, 4] and "error" not in log
    dest = tmp_path / "merged"
    tool = load_script("merge_gpu_weights")
    assert tool.main([str(run), str(base), str(dest), "--decoder", str(run / "decoder.1.safetensors")]) == 0
    m0, m1 = from_pretrained(base), from_pretrained(dest)
    a, b = m0.vae.state_dict(), m1.vae.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-3) for k in a if k.startswith(("encoder.", "quant_conv.")))
    assert any(not torch.allclose(a[k], b[k], atol=1e-3) for k in a if k.startswith("decoder."))
    a, b = m0.unet.state_dict(), m1.unet.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-3) for k in a)                 # the denoiser is untouched
    with pytest.raises(SystemExit, match="not a train_gpu_decoder.py snapshot"):
        tool.main([str(run), str(base), str(tmp_path / "x"), "--decoder", str(base / "unet.safetensors")])


def test_decoder_run_starts_from_the_critic_a_decoder_stage_saved(pack, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from geot2e.train.gan import PatchDiscriminator

    base, _, out = pack
    torch.manual_seed(5)
    disc = PatchDiscriminator(3)
    state = tmp_path / "state.safetensors"          # the layout of a decoder stage's checkpoint
    save_file({f"aux.critic.{k}": v for k, v in disc.state_dict().items()} | {"param.x": torch.zeros(1)}, str(state))
    own = tmp_path / "pack"
    shutil.copytree(out, own)
    tool = load_script("make_gpu_pack")
    assert tool.extract_critic(state, own / "critic.safetensors") == len(disc.state_dict())
    got = load_file(str(own / "critic.safetensors"))
    assert all(torch.equal(got[k], v) for k, v in disc.state_dict().items())
    with pytest.raises(SystemExit, match="holds no critic"):
        tool.extract_critic(base / "unet.safetensors", tmp_path / "x.safetensors")
    run = tmp_path / "dec"
    _run_without_geo_stack("train_gpu_decoder.py", [base, own, run, "--max-steps", "2", "--snapshots", "1"], tmp_path)
    log = json.loads((run / "log.json").read_text())
    assert log["critic"].endswith("critic.safetensors") and log["critic_warmup"] == 0 and log["disc_start"] == 0
