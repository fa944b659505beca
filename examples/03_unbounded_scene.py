"""Unbounded scene construction: grow a georeferenced canvas by repeated outpainting.

    python examples/03_unbounded_scene.py --out outputs
    python examples/03_unbounded_scene.py --small --model PATH      # seconds (CI)

Starting from a real Landsat 8 crop, each step extends the canvas on one side with a
new prompt (Text2Earth's "unbounded scene construction"). The canvas keeps the CRS and
the 30 m pixel grid: the original pixels stay at their map coordinates, bit for bit,
and every new pixel is georeferenced. Outputs: ``<out>/unbounded_scene.tif`` (COG whose
``synthesized`` band marks every generated pixel) and ``<out>/unbounded_scene.png``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import xarray as xr

import geot2e
from geot2e.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
TEST_CROP = ROOT / "tests" / "data" / "landsat_224078_rgb_crop.tif"

#: one (side, prompt) per extension step
PLAN = [
    ("right", "farmland with large rectangular fields"),
    ("bottom", "a lake with forested shores"),
    ("left", "dense green forest"),
    ("top", "a small town with streets and houses"),
]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--model", default="default", help="'default' or a checkpoint folder")
    p.add_argument("--small", action="store_true", help="a 64 x 64 start, 16-pixel steps, 2 denoising steps")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: 25, or 2 with --small)")
    p.add_argument("--grow", type=int, default=None, help="pixels added per step (default: 128, 16 with --small)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input", default=str(TEST_CROP), help="starting raster (default: the committed crop)")
    return p.parse_args(argv)


def resolve_model(name: str, out: Path) -> str:
    """``name``, or a tiny random stand-in (with a clear note) if the default is not installed."""
    if name != "default":
        return name
    try:
        geot2e.load_model("default")
        return name
    except CheckpointError as exc:
        from geot2e.models import Text2Earth, save_pretrained, tiny_config

        path = out / "tiny-random-model"
        print(f"note: {exc}\n      Using a tiny RANDOM model ({path}) instead: the pipeline runs, the fill is noise.")
        if not (path / "config.json").is_file():
            save_pretrained(Text2Earth(tiny_config()), path)
        return str(path)


def on_grid(mask: xr.DataArray, canvas: xr.DataArray) -> xr.DataArray:
    """``mask`` (on a smaller grid inside ``canvas``) placed on ``canvas``'s grid, False elsewhere."""
    res = abs(float(canvas.x[1] - canvas.x[0]))
    return mask.reindex(x=canvas.x, y=canvas.y, method="nearest", tolerance=res / 4, fill_value=False)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps or (2 if args.small else 25)
    grow = args.grow or (16 if args.small else 128)

    start = geot2e.io.open_raster(args.input)
    start = start.isel(y=slice(192, 256), x=slice(192, 256)) if args.small else start.isel(
        y=slice(128, 384), x=slice(128, 384))
    model = resolve_model(args.model, out)
    tile = dict(tile=32, overlap=8) if args.small else {}
    print(f"start   {dict(start.sizes)} {start.dtype}, {start.rio.crs}, GSD {geot2e.gsd(start):.1f} m, "
          f"bounds {tuple(round(v) for v in start.rio.bounds())}")

    canvas = start
    generated = None  # every pixel made by any step, on the current canvas grid
    for i, (side, prompt) in enumerate(PLAN):
        canvas = geot2e.outpaint(canvas, **{side: grow}, prompt=prompt, model=model, steps=steps,
                                 seed=args.seed + i, **tile)
        new = canvas.synthesized
        generated = new if generated is None else (new | on_grid(generated, canvas))
        print(f"step {i + 1}  +{grow} px {side:<6} {prompt!r:<45} -> {canvas.rio.width} x {canvas.rio.height} px, "
              f"bounds {tuple(round(v) for v in canvas.rio.bounds())}")

    # the original pixels are still there, at their own coordinates, unchanged
    kept = canvas.sel(x=start.x, y=start.y, method="nearest")
    same = bool(np.array_equal(kept.values, start.values))
    print(f"check   same CRS: {canvas.rio.crs == start.rio.crs}; same pixel size: "
          f"{canvas.rio.resolution() == start.rio.resolution()}; original pixels bit-identical: {same}")

    result = canvas.assign_coords(synthesized=generated)
    path = geot2e.io.to_cog(result, out / "unbounded_scene.tif", overwrite=True)
    back = geot2e.io.open_raster(path)
    print(f"COG     {path}: {back.rio.crs}, {back.rio.width} x {back.rio.height} px, "
          f"{int(back.synthesized.sum()):,} generated pixels")

    fig = geot2e.plot.compare(start, result, mask=generated,
                              titles=("start (real Landsat 8)", f"after {len(PLAN)} outpainting steps",
                                      "generated pixels"))
    png = out / "unbounded_scene.png"
    fig.savefig(png, dpi=110)
    print(f"figure  {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
