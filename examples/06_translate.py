"""Image-to-image translation on held-out crops: one row per task, input | geot2e | the best
classical baseline | truth.

    python examples/06_translate.py --figure docs/img/translation_tasks.png   # held-out crops (sample data)
    python examples/06_translate.py --small --model PATH                       # seconds (CI, tests/data crops)
    python examples/06_translate.py --cirrus docs/img/dehaze_real_cirrus.png   # dehazing on real cirrus

Super-resolution ×2, dehazing and NIR → RGB use a crop of the held-out Sentinel-2 block (10 m);
pan-sharpening uses Landsat 8's real PAN band near Pensacola (Wald's protocol: the 30 m bands
area-averaged to 60 m, the PAN to 30 m, the 30 m bands the truth). Baselines: bicubic, high-pass
PAN-detail injection (HPF), a linear NIR regression fitted on the training sources, the dark
channel prior (:mod:`geot2e.eval.translation`). With ``--small`` the crops come from ``tests/data`` and the NIR
regression is fitted on the crop itself.

``--cirrus`` runs ``dehaze`` on real cirrus instead (Landsat 8 near Pensacola, two 128-px crops,
:data:`CIRRUS_CROPS`): hazy input | the cirrus band B9 | geot2e | dark channel prior. There is no
truth under real cirrus, so the figure is qualitative; the numbers are the synthetic-haze ones. The scaling is fitted on
the scene's clear pixels (BQA), as a user gives ``radiometry=`` for a hazy crop.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="the committed crops and 2 steps (CI, seconds)")
    p.add_argument("--model", default="default", help="a model folder with a translation ControlNet")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, 2 with --small)")
    p.add_argument("--samples", type=int, default=1, help="K samples: the figure shows their mean")
    p.add_argument("--figure", default=None, help="write the figure here (default: OUT/translation_tasks.png)")
    p.add_argument("--out", default="outputs", help="output folder")
    p.add_argument("--cirrus", default=None, metavar="FIGURE",
                   help="dehaze a real cirrus crop of Landsat 8 (sample data) and write this figure instead")
    return p.parse_args(argv)


#: rows, columns of two real-cirrus crops in the Pensacola scene (128 px, 30 m; clear ground's B9 is
#: about 5120 DN): thin streaks over forest and a road at the scene's north edge (B9 5340, under 1 %
#: flagged cirrus, 0.1 % cloud), and small cumulus that the BQA flags as cirrus (B9 5717, 44 %
#: high-confidence cirrus, 2.7 % cloud)
CIRRUS_CROPS = {"thin cirrus": (slice(0, 128), slice(352, 480)),
                "popcorn cloud": (slice(288, 416), slice(352, 480))}


def cirrus_figure(path: Path, *, model: str, steps, samples: int) -> None:
    """Before / after on real cirrus: input, B9, geot2e's dehazing, the dark channel prior (one
    row per crop of :data:`CIRRUS_CROPS`, each stretched by its input's robust range)."""
    import matplotlib.pyplot as plt

    import geot2e
    from geot2e.eval.metrics import robust_range, to_unit
    from geot2e.eval.translation import dark_channel_dehaze
    from geot2e.io.sample_data import open_pensacola, open_pensacola_qa

    scene, cirrus, qa_all = open_pensacola(), open_pensacola(bands=("cirrus",)), open_pensacola_qa()
    from geot2e.geo import Radiometry, cloud_mask

    clear_scaling = Radiometry.fit(scene, valid=~np.asarray(cloud_mask(qa_all, kind="landsat8_bqa").values))
    fig, axes = plt.subplots(len(CIRRUS_CROPS), 4, figsize=(12, 3.3 * len(CIRRUS_CROPS)), squeeze=False)
    for row, (name, (ys, xs)) in zip(axes, CIRRUS_CROPS.items()):
        hazy = scene.isel(y=ys, x=xs).load()
        b9 = cirrus.isel(y=ys, x=xs).values[0].astype(float)
        qa = qa_all.isel(y=ys, x=xs).values
        # the scene's clear ground sets the scaling (the BQA's clear pixels), as a user would pass it
        res = geot2e.translate(hazy, "dehaze", model=model, steps=steps, samples=samples, progress=False,
                               radiometry=clear_scaling)
        v = np.asarray(hazy.values, float)
        lo, hi = robust_range(v)
        dcp = (dark_channel_dehaze(np.clip(to_unit(v, lo, hi), 0, 1)) * (hi - lo).reshape(-1, 1, 1)
               + lo.reshape(-1, 1, 1))
        got = np.asarray(res.values, float)
        flagged = float((((qa >> 12) & 3) == 3).mean())
        panels = [(_stretch(v, lo, hi), f"{name} ({flagged:.0%} flagged cirrus)"),
                  (np.clip((b9 - 5000) / 2500, 0, 1), f"B9 cirrus band, mean {b9.mean():.0f} DN"),
                  (_stretch(got, lo, hi), "geot2e.translate(…, 'dehaze')"),
                  (_stretch(dcp, lo, hi), "dark channel prior")]
        for ax, (img, title) in zip(row, panels):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
        for label, img in (("input", v), ("geot2e", got), ("dark channel prior", dcp)):
            print(f"{name}: {label:19s} band means {np.round(img.reshape(3, -1).mean(1)).astype(int).tolist()}, "
                  f"contrast (std) {np.round(img.reshape(3, -1).std(1)).astype(int).tolist()}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def _stretch(x: np.ndarray, lo, hi) -> np.ndarray:
    lo, hi = np.asarray(lo, float).reshape(-1, 1, 1), np.asarray(hi, float).reshape(-1, 1, 1)
    return np.clip((x.astype(float) - lo) / (hi - lo), 0, 1).transpose(1, 2, 0)


def _cases(small: bool):
    """(task, input DataArray, control or None, truth (3, y, x), baseline name, baseline (3, y, x), kwargs)."""
    import rioxarray  # noqa: F401
    import xarray as xr

    from geot2e.eval import translation as T
    from geot2e.eval.metrics import robust_range, to_unit
    from geot2e.geo import Radiometry

    if small:
        d = ROOT / "tests" / "data"
        rgb = rioxarray.open_rasterio(d / "landsat_224078_rgb_crop.tif").isel(x=slice(64, 192), y=slice(64, 192)).load()
        s2 = rioxarray.open_rasterio(d / "s2_chincoteague_6band_crop.tif").load()
        s2 = s2.assign_coords(band=list(s2.attrs["long_name"])).sel(band=["B04", "B03", "B02", "B08"])
        from geot2e.geo.refine import align_to_refinement

        ms = rioxarray.open_rasterio(d / "pensacola_rgb_crop.tif").isel(x=slice(0, 56), y=slice(64, 120)).load()
        pan = align_to_refinement(rioxarray.open_rasterio(d / "pensacola_pan_crop.tif").load(), ms)
        pan30 = pan.astype(float).coarsen(x=2, y=2).mean().values[0]
        pairs = [(ms, pan30)]
    else:
        rgb = T._crops("sentinel2_chincoteague", 1, 128, 0)[0]
        s2 = T._crops("sentinel2_chincoteague", 1, 128, 0, bands=("red", "green", "blue", "nir"))[0]
        pairs = T._pensacola_pairs(1, 64, 0)
    cases = []
    truth = np.asarray(rgb.values, float)
    coarse = T._coarsen(truth, 2)
    inp = T._as_raster(coarse.round().astype(rgb.dtype), rgb, 2)
    cases.append(("super_resolution", inp, None, truth, "bicubic", T.bicubic(coarse, 2), {"scale": 2}))
    ms, pan = pairs[0]
    truth_ms = np.asarray(ms.values, float)
    c_ms = T._coarsen(truth_ms, 2)
    cases.append(("pansharpen", T._as_raster(c_ms.round().astype(ms.dtype), ms, 2), T._as_raster(pan[None], ms),
                  truth_ms, "HPF", T.hpf(c_ms, pan, 2), {}))
    nir = s2.isel(band=[3])
    rgb_s2 = np.asarray(s2.isel(band=[0, 1, 2]).values, float)
    r_rgb, r_nir = Radiometry.fit(s2.isel(band=[0, 1, 2])), Radiometry.fit(nir)
    zn = r_nir.to_model(np.asarray(nir.values))[0]
    if small:                                        # no sample data: fit the regression on this crop
        zt = r_rgb.to_model(rgb_s2).reshape(3, -1)
        design = np.stack([zn.ravel(), np.ones(zn.size)], 1)
        coef = np.linalg.lstsq(design, zt.T, rcond=None)[0]
        a, b = coef[0], coef[1]
    else:
        a, b = T.nir_regression()
    reg = r_rgb.from_model(np.clip(a[:, None, None] * zn[None] + b[:, None, None], -1, 1), dtype="float64")
    cases.append(("nir_to_rgb", xr.DataArray(nir.values, dims=nir.dims, coords=nir.coords).rio.write_crs(nir.rio.crs)
                  .rio.write_transform(nir.rio.transform()).assign_coords(band=["nir"]),
                  None, rgb_s2, "linear regression", reg, {"_nir": (r_nir, r_rgb)}))
    lo, hi = robust_range(truth)
    hazy01 = T.haze(np.clip(to_unit(truth, lo, hi), 0, 1), seed=1000)
    span, low = (hi - lo).reshape(-1, 1, 1), lo.reshape(-1, 1, 1)
    hazy = hazy01 * span + low
    # the prior works on the clear crop's scale; geot2e is given the same (radiometry=)
    cases.append(("dehaze", rgb.copy(data=hazy.round().astype(rgb.dtype)), None, truth, "dark channel prior",
                  T.dark_channel_dehaze(hazy01) * span + low, {"radiometry": Radiometry.fit(rgb)}))
    return cases


def main(argv=None) -> int:
    args = parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import geot2e
    from geot2e.eval.metrics import psnr, robust_range, to_unit

    steps = args.steps or (2 if args.small else None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.cirrus:
        cirrus_figure(Path(args.cirrus), model=args.model, steps=steps, samples=args.samples)
        return 0
    fig_path = Path(args.figure) if args.figure else out / "translation_tasks.png"
    cases = _cases(args.small)
    fig, axes = plt.subplots(len(cases), 4, figsize=(12, 3.1 * len(cases)))
    for row, (task, inp, ctrl, truth, base_name, base, kw) in zip(axes, cases):
        nir = kw.pop("_nir", None)
        res = geot2e.translate(inp, task, control=ctrl, model=args.model, steps=steps, samples=args.samples,
                               progress=False, **kw)
        got = np.asarray(res.values, float)
        if nir is not None:                           # RGB in the NIR band's scaling: restretch as the truth
            r_nir, r_rgb = nir
            from geot2e.geo import Radiometry

            got = r_rgb.from_model(Radiometry(lo=r_nir.lo * 3, hi=r_nir.hi * 3, dtype="float64").to_model(got),
                                   dtype="float64")
        lo, hi = robust_range(truth)
        m = np.ones(truth.shape[-2:], bool)
        score = {n: psnr(to_unit(v, lo, hi), to_unit(truth, lo, hi), m) for n, v in (("g", got), ("b", base))}
        shown = np.asarray(inp.values, float)
        if task == "super_resolution" or task == "pansharpen":
            shown = np.repeat(np.repeat(shown, 2, 1), 2, 2)
        if task == "nir_to_rgb":
            shown = np.repeat(shown, 3, 0)
            in_lo, in_hi = robust_range(shown)
        else:
            in_lo, in_hi = lo, hi
        panels = [(shown, in_lo, in_hi, f"{task}: input"), (got, lo, hi, f"geot2e  {score['g']:.1f} dB"),
                  (base, lo, hi, f"{base_name}  {score['b']:.1f} dB"), (truth, lo, hi, "truth")]
        for ax, (img, l, h, title) in zip(row, panels):
            ax.imshow(_stretch(img, l, h), interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
        print(f"{task:17s} geot2e {score['g']:5.2f} dB   {base_name} {score['b']:5.2f} dB")
    fig.tight_layout()
    fig.savefig(fig_path, dpi=110)
    print(f"wrote {fig_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
