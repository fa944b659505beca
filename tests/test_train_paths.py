"""One training path: continuing any stage from a base model, a new decoder behind a trained
encoder, tile packs trained on a machine without the raster stack, sharded exports."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from script_helpers import ROOT, tiny_train_config

from geot2e.models import Text2Earth, from_pretrained, load_model, save_pretrained

pytestmark = pytest.mark.filterwarnings("ignore::geot2e.errors.PromptTruncatedWarning")


def _equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def _config(tmp_path, **changes):
    """configs/tiny_test.yaml (absolute paths) with top-level keys changed; None deletes a key."""
    d = yaml.safe_load(tiny_train_config(tmp_path).read_text())
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    d["out_dir"] = str(tmp_path / "run")
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(d))
    return p, d


@pytest.fixture()
def base(tmp_path):
    """A random model of configs/tiny_test.yaml's architecture."""
    from geot2e.train.config import _model_config

    torch.manual_seed(0)
    path = tmp_path / "base"
    model = yaml.safe_load((ROOT / "configs" / "tiny_test.yaml").read_text())["model"]
    save_pretrained(Text2Earth(_model_config(model)), path)
    return path


def test_base_model_decoder_stage_trains_the_decoder_only(tmp_path, base):
    from geot2e.train import run_training

    cfg, _ = _config(tmp_path, base_model=str(base), vae=None, denoiser=None, finetune=None,
                     model={"model_id": "decoder-test"}, export=str(tmp_path / "export"))
    run_training(cfg, progress=False)
    m0, m1 = from_pretrained(base), from_pretrained(tmp_path / "run" / "final")
    assert _equal(m0.unet, m1.unet) and _equal(m0.vae.encoder, m1.vae.encoder)   # latent space kept
    assert not _equal(m0.vae.decoder, m1.vae.decoder)                             # the decoder trained
    assert load_model(tmp_path / "export", device="cpu").model_id == "decoder-test"
    # the words of the training captions travel with the model (prompts outside them warn)
    from geot2e.models.vocabulary import CAPTIONER_VOCABULARY, load_vocabulary

    for folder in (tmp_path / "export", tmp_path / "run" / "final"):
        assert load_vocabulary(folder) >= CAPTIONER_VOCABULARY


def test_base_model_denoiser_stage_keeps_the_vae(tmp_path, base):
    from geot2e.train import run_training

    cfg, _ = _config(tmp_path, base_model=str(base), vae=None, finetune=None, decoder=None)
    run_training(cfg, progress=False)
    m0, m1 = from_pretrained(base), from_pretrained(tmp_path / "run" / "final")
    assert _equal(m0.vae, m1.vae) and not _equal(m0.unet, m1.unet)


def test_new_decoder_widths_behind_the_same_encoder(tmp_path, base):
    from geot2e.train import run_training

    cfg, _ = _config(tmp_path, base_model=str(base), vae=None, denoiser=None, finetune=None,
                     model={"vae": {"decoder_block_out_channels": [64, 32, 32], "decoder_layers_per_block": 2}})
    run_training(cfg, progress=False)
    m0, m1 = from_pretrained(base), from_pretrained(tmp_path / "run" / "final")
    assert m1.config.vae.decoder_block_out_channels == [64, 32, 32] and m1.config.vae.decoder_layers_per_block == 2
    assert _equal(m0.vae.encoder, m1.vae.encoder) and _equal(m0.unet, m1.unet)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert m1.vae.decode(m1.vae.encode(x).latent_dist.mean).sample.shape == x.shape


def test_base_model_refuses_architecture_overrides(tmp_path, base):
    from geot2e.errors import ParameterError
    from geot2e.train import run_training

    cfg, _ = _config(tmp_path, base_model=str(base), vae=None, model={"unet": {"block_out_channels": [64, 128]}})
    with pytest.raises(ParameterError, match="base_model"):
        run_training(cfg, progress=False)


def test_sharded_export_loads_as_the_same_model(tmp_path, base):
    m = from_pretrained(base)
    save_pretrained(m, tmp_path / "sharded", max_shard_mb=0.2)
    files = sorted(p.name for p in (tmp_path / "sharded").iterdir())
    assert any(f.startswith("unet-00001-of-") for f in files) and "unet.safetensors" not in files
    from safetensors import safe_open

    for f in files:                     # every shard is under the limit unless one tensor alone exceeds it
        if "-of-" in f:
            with safe_open(str(tmp_path / "sharded" / f), "pt") as fh:
                keys = list(fh.keys())
            assert (tmp_path / "sharded" / f).stat().st_size < 0.2e6 + 8192 or len(keys) == 1
    assert _equal(m, from_pretrained(tmp_path / "sharded"))
    next((tmp_path / "sharded").glob("unet-00002-*")).unlink()
    from geot2e.errors import CheckpointError

    with pytest.raises(CheckpointError, match="incomplete"):
        from_pretrained(tmp_path / "sharded")


def test_pack_holds_the_sources_exactly(tmp_path):
    from geot2e.train.config import load_source, load_train_config, write_config_pack
    from geot2e.train.pack import read_pack

    cfg_path, _ = _config(tmp_path)
    cfg = load_train_config(cfg_path)
    out = write_config_pack(cfg, tmp_path / "pack")
    got, val, meta = read_pack(out)
    for spec, src in zip(cfg.sources, got):
        ref = load_source(spec)
        assert np.array_equal(ref.data, src.data) and np.array_equal(ref.valid, src.valid)
        assert src.gsd == pytest.approx(ref.gsd) and src.weight == spec.weight
    assert (out / "manifest.json").is_file() and "sources" in meta["manifest"]


def test_pack_trains_without_the_raster_stack(tmp_path, base):
    """The GPU path: a fresh interpreter where rasterio, pyproj, xarray, ... cannot be imported
    trains the denoiser from a pack, continuing a base model, validates, exports in shards."""
    from geot2e.train.config import load_train_config, write_config_pack

    cfg_path, d = _config(tmp_path, denoiser={**yaml.safe_load((ROOT / "configs" / "tiny_test.yaml").read_text())
                                              ["denoiser"], "val_every": 2, "val_tiles": 4})
    write_config_pack(load_train_config(cfg_path), tmp_path / "pack")
    gpu = {k: v for k, v in d.items() if k != "sources"}
    gpu.update(pack=str(tmp_path / "pack"), base_model=str(base), vae=None, finetune=None, decoder=None,
               export=str(tmp_path / "export"), export_shard_mb=0.3, out_dir=str(tmp_path / "gpu_run"))
    gpu.pop("model")
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(gpu))
    code = ("import sys\n"
            "for name in ('rasterio', 'rioxarray', 'pyproj', 'xarray', 'geopandas', 'shapely', 'dask', 'zarr',\n"
            "             'affine', 'pyogrio'):\n"
            "    sys.modules[name] = None   # import fails: not installed\n"
            "from geot2e.train import run_training\n"
            f"run_training({str(tmp_path / 'gpu.yaml')!r}, progress=False)\n"
            "assert 'xarray' not in [m for m, v in sys.modules.items() if v is not None]\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=str(ROOT),
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    state = json.loads((tmp_path / "gpu_run" / "denoiser" / "state.json").read_text())
    assert state["best"]["step"] in (2, 4, 6) and any("val_loss" in e for e in state["log"])
    exported = from_pretrained(tmp_path / "export")
    assert any(p.name.startswith("unet-00001-of-") for p in (tmp_path / "export").iterdir())
    m0 = from_pretrained(base)
    sa, sb = m0.vae.state_dict(), exported.vae.state_dict()
    assert all(torch.equal(sa[k].half().float(), sb[k]) for k in sa)                 # VAE kept (float16 export)
    sa, sb = m0.unet.state_dict(), exported.unet.state_dict()
    assert any(not torch.equal(sa[k].half().float(), sb[k]) for k in sa)            # the denoiser trained
    manifest = json.loads((tmp_path / "gpu_run" / "manifest.json").read_text())
    assert manifest["pack"]["manifest"]["sources"]


def test_pack_stores_8bit_rasters_as_uint8_and_reads_them_back_exactly():
    """8-bit imagery (the Blue Marble, NEON) travels at one byte per value; 16-bit stays 16-bit."""
    from geot2e.train.pack import _compact

    rng = np.random.default_rng(0)
    eight = rng.integers(0, 256, (3, 8, 8)).astype(np.float32)
    sixteen = eight * 100
    assert _compact(eight).dtype == np.uint8 and np.array_equal(_compact(eight).astype(np.float32), eight)
    assert _compact(sixteen).dtype == np.uint16 and np.array_equal(_compact(sixteen).astype(np.float32), sixteen)
    assert _compact(eight + 0.5).dtype == np.float32


def test_cli_train_parser_needs_no_raster_stack():
    """`geot2e train` on a torch-only GPU box: building the command line's parser imports none of
    the geospatial stack (it once imported geot2e.translation, hence xarray, for the task names)."""
    code = ("import sys\n"
            "for name in ('rasterio', 'rioxarray', 'pyproj', 'xarray', 'geopandas', 'shapely', 'dask', 'zarr',\n"
            "             'affine', 'pyogrio'):\n"
            "    sys.modules[name] = None   # import fails: not installed\n"
            "from geot2e.cli import build_parser\n"
            "a = build_parser().parse_args(['train', 'configs/tiny_test.yaml', '--device', 'cpu'])\n"
            "print(a.config)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(ROOT),
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and "tiny_test.yaml" in r.stdout, r.stderr[-2000:]
