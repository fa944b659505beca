"""Cross-modal generation with the default model's modality adapters: text → red, green, blue
and NIR (``modality="rgbn"``: the RGB model and the NIR adapter from one noise, so NDVI from
text), text → panchromatic on the exact 15 m
refinement of a 30 m grid, and a hole in a real NIR band filled by the NIR adapter (beside a
biharmonic fill of the same hole).

    python examples/07_modalities.py --figure docs/img/modalities.png   # held-out crops (sample data)
    python examples/07_modalities.py --small --model PATH               # seconds (CI, tests/data crops)

Held-out crops: the Sentinel-2 test block (10 m; NIR, red, green) and the held-out quarter of
Landsat 8 Pensacola's PAN band (15 m, clear pixels), with its 30 m red/green/blue beside it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VEGETATION, WATER = "satellite image, mostly green vegetation", "satellite image, mostly water"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="the committed crops and 2 steps (CI, seconds)")
    p.add_argument("--model", default="default", help="a model folder with modality adapters (modality/)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, 2 with --small)")
    p.add_argument("--figure", default=None, help="write the figure here (default: OUT/modalities.png)")
    p.add_argument("--out", default="outputs", help="output folder")
    return p.parse_args(argv)


def _crops(small: bool):
    """(Sentinel-2 crop with roles nir/red/green/..., Pensacola 30 m RGB crop, its 15 m PAN)."""
    import rioxarray  # noqa: F401

    from geot2e.io import open_raster

    if small:
        d = ROOT / "tests" / "data"
        s2 = open_raster(d / "s2_chincoteague_6band_crop.tif")
        rgb = open_raster(d / "pensacola_rgb_crop.tif").isel(y=slice(0, 32), x=slice(0, 32))
        pan = open_raster(d / "pensacola_pan_crop.tif").isel(y=slice(0, 64), x=slice(0, 64))
        return s2, rgb, pan
    from rasterio.enums import Resampling

    from geot2e.eval.holdout import block_crops
    from geot2e.io.sample_data import open_pensacola, open_sentinel2
    from geot2e.train.samples import valid_pixels

    scene = open_sentinel2(bands=("nir", "red", "green", "blue")).load()
    s2 = block_crops(scene, "sentinel2_chincoteague", 1, size=128, seed=3)[0]
    pan_scene = open_pensacola(bands=("pan",)).load()
    clear = valid_pixels("landsat8_pensacola", pan_scene, True)
    pan = block_crops(pan_scene, "landsat8_pensacola_pan", 1, size=128, seed=0, valid=clear)[0]
    rgb = open_pensacola(bands=("red", "green", "blue")).load()
    rgb = rgb.rio.clip_box(*pan.rio.bounds()).rio.reproject(rgb.rio.crs, resolution=30.0,
                                                              resampling=Resampling.average)
    return s2, rgb, pan


def _band(da, role: str) -> np.ndarray:
    from geot2e.geo.bands import band_roles

    return np.asarray(da.values[list(band_roles(da)).index(role)], float)


def _ndvi(da) -> np.ndarray:
    nir, red = _band(da, "nir"), _band(da, "red")
    return (nir - red) / np.maximum(nir + red, 1e-6)


def _cir(da, lo=None, hi=None):
    x = np.stack([_band(da, r) for r in ("nir", "red", "green")])
    lo = np.percentile(x, 1, axis=(1, 2)) if lo is None else lo
    hi = np.percentile(x, 99, axis=(1, 2)) if hi is None else hi
    return np.clip((x - lo[:, None, None]) / (hi - lo)[:, None, None], 0, 1).transpose(1, 2, 0), lo, hi


def main(argv=None) -> int:
    args = parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import geot2e
    from geot2e.eval.fills import biharmonic_fill
    from geot2e.geo.refine import refine, refinement_of

    steps = args.steps or (2 if args.small else None)
    opts = dict(model=args.model, steps=steps, progress=False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig_path = Path(args.figure) if args.figure else out / "modalities.png"
    s2, rgb, pan_truth = _crops(args.small)

    # 1. text -> red, green, blue, NIR on the real crop's grid and value scale (so NDVI is physical)
    cir = {p: geot2e.generate(p, like=s2, modality="rgbn", **opts) for p in (VEGETATION, WATER)}
    for p, da in cir.items():
        print(f"rgbn '{p.split(', ')[-1]}': bands {da.attrs['long_name']}, NDVI median {np.median(_ndvi(da)):.2f}")
    print(f"real crop: NDVI median {np.median(_ndvi(s2)):.2f}")

    # 2. text -> PAN on the exact 2x refinement of the 30 m RGB grid
    fine = refine(rgb, 2)
    pan = geot2e.generate("", like=fine, modality="pan", gsd=15.0, **opts)
    scale = refinement_of(rgb, pan)[0]
    print(f"pan: {pan.shape[1]}x{pan.shape[2]} px at {geot2e.gsd(pan):.1f} m, an exact {scale}x refinement of the "
          f"{geot2e.gsd(rgb):.1f} m grid")
    geot2e.io.to_cog(pan, out / "pan_15m.tif", overwrite=True)

    # 3. a hole in the real NIR band, filled by the NIR adapter
    from geot2e.geo.bands import band_roles

    nir = s2.isel(band=[list(band_roles(s2)).index("nir")])
    h, w = nir.shape[-2:]
    mask = np.zeros((h, w), bool)
    mask[h // 4: 3 * h // 4, w // 3: 2 * w // 3] = True
    filled = geot2e.inpaint(nir, mask, modality="nir", bands=("nir",), **opts)
    same = bool(np.array_equal(filled.values[:, ~mask], nir.values[:, ~mask]))
    print(f"nir fill: {int(mask.sum())} px synthesized; pixels outside the hole bit-identical: {same}")
    geot2e.io.to_cog(filled, out / "nir_filled.tif", overwrite=True)

    fig, axes = plt.subplots(3, 4, figsize=(13, 10))
    real_cir, lo, hi = _cir(s2)
    panels = [(real_cir, "real CIR (held out)"), (_ndvi(s2), "its NDVI")]
    for p, da in cir.items():
        panels += [(_cir(da, lo, hi)[0], f"generated (rgbn), as CIR: '{p.split(', ')[-1]}'")]
    for ax, (img, title) in zip(axes[0], panels):
        if img.ndim == 2:
            ax.imshow(img, cmap="RdYlGn", vmin=-0.6, vmax=0.9, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=9)
    g = [np.asarray(rgb.values[i], float) for i in range(3)]
    rgb_img = np.stack([np.clip((b - np.percentile(b, 1)) / (np.percentile(b, 99) - np.percentile(b, 1)), 0, 1)
                        for b in g], -1)
    pv = np.asarray(pan.values[0], float)
    tv = np.asarray(pan_truth.values[0], float)
    row = [(rgb_img, f"30 m RGB ({rgb.shape[1]} px)"), (pv, f"generated PAN, 15 m ({pv.shape[0]} px)"),
           (tv, "real PAN, 15 m (held out)"), (_ndvi(cir[VEGETATION]), "NDVI of generated 'vegetation'")]
    for ax, (img, title) in zip(axes[1], row):
        if "NDVI" in title:
            ax.imshow(img, cmap="RdYlGn", vmin=-0.6, vmax=0.9, interpolation="nearest")
        elif img.ndim == 2:
            ax.imshow(img, cmap="gray", vmin=np.percentile(img, 1), vmax=np.percentile(img, 99),
                      interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=9)
    nv, fv = np.asarray(nir.values[0], float), np.asarray(filled.values[0], float)
    bv = biharmonic_fill(nv[None], mask)[0]              # the classical fill, beside the adapter's
    vlo, vhi = np.percentile(nv, 1), np.percentile(nv, 99)
    holed = np.where(mask, np.nan, nv)
    err = {name: float(np.abs(v - nv)[mask].mean()) for name, v in (("nir adapter", fv), ("biharmonic", bv))}
    print("nir fill, mean absolute error over the hole (DN): "
          + ", ".join(f"{name} {e:.0f}" for name, e in err.items()))
    for ax, (img, title) in zip(axes[2], [(holed, "real NIR with a hole"),
                                          (fv, f"filled (nir adapter), MAE {err['nir adapter']:.0f}"),
                                          (bv, f"biharmonic fill, MAE {err['biharmonic']:.0f}"), (nv, "truth")]):
        ax.imshow(img, cmap="gray", vmin=vlo, vmax=vhi, interpolation="nearest")
        ax.set_title(title, fontsize=9)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(fig_path, dpi=100)
    print(f"wrote {fig_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
