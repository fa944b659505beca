"""Vector-guided editing: polygons with a ``prompt`` column become a prompt map.

    python examples/02_vector_editing.py --out outputs
    python examples/02_vector_editing.py --small --model PATH       # seconds (CI)

Each polygon of ``examples/data/edits_224078.gpkg`` (a GeoPackage, column ``prompt``)
is filled with its own text on a real Landsat 8 crop: ``geot2e.inpaint(da, gdf,
prompt_column="prompt")``. The same call works with any vector file GDAL reads, in any CRS.
Outputs: ``<out>/vector_edit_224078.tif`` (COG) and ``<out>/vector_edit_224078.png``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import geot2e
from geot2e.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
EDITS = ROOT / "examples" / "data" / "edits_224078.gpkg"
TEST_CROP = ROOT / "tests" / "data" / "landsat_224078_rgb_crop.tif"
SMALL_WINDOW = (slice(150, 406), slice(100, 356))  # rows, cols of the committed crop


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--model", default="default", help="'default' or a checkpoint folder")
    p.add_argument("--small", action="store_true", help="a 256 x 256 window and 2 steps (CI, seconds)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: 25, or 2 with --small)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vector", default=str(EDITS), help="polygons with a prompt column")
    p.add_argument("--column", default="prompt", help="name of the prompt column (default: prompt)")
    p.add_argument("--input", default=str(TEST_CROP), help="RGB raster to edit (default: the committed crop)")
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


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps or (2 if args.small else 25)

    import geopandas as gpd

    da = geot2e.io.open_raster(args.input)
    if args.small:
        da = da.isel(y=SMALL_WINDOW[0], x=SMALL_WINDOW[1])
    edits = gpd.read_file(args.vector)
    print(f"raster  {Path(args.input).name}: {dict(da.sizes)} {da.dtype}, {da.rio.crs}, GSD {geot2e.gsd(da):.1f} m")
    print(f"edits   {Path(args.vector).name}: {len(edits)} polygons ({edits.crs}), column {args.column!r}:")

    # what each prompt covers, on the raster's grid (the labels the engine uses)
    labels, prompts = geot2e.geo.prompt_map(edits, args.column, da)
    counts = np.bincount(np.asarray(labels).ravel(), minlength=len(prompts) + 1)
    for k, prompt in enumerate(prompts):
        print(f"          {counts[k + 1]:6d} px  {prompt!r}")

    model = resolve_model(args.model, out)
    tile = dict(tile=64, overlap=16) if args.small else {}
    edited = geot2e.inpaint(da, edits, prompt_column=args.column, model=model, steps=steps, seed=args.seed, **tile)

    synth = edited.synthesized.values
    same = bool((edited.values == da.values)[:, ~synth].all())
    print(f"check   {int(synth.sum()):,} pixels edited; all other pixels bit-identical: {same}")
    print(f"        prompts recorded in the provenance: {edited.attrs.get('geot2e_prompt')}")

    path = geot2e.io.to_cog(edited, out / "vector_edit_224078.tif", overwrite=True)
    back = geot2e.io.open_raster(path)
    print(f"COG     {path}: {back.rio.crs}, {back.rio.resolution()} m pixels")

    fig = geot2e.plot.compare(da, edited, mask=edited.synthesized,
                              titles=("original", "edited (one prompt per polygon)", "edited pixels"))
    ax = fig.axes[1]
    for geom, prompt in zip(edits.to_crs(da.rio.crs).geometry, edits[args.column]):
        x, y = geom.exterior.xy
        ax.plot(x, y, color="yellow", lw=0.8)
        ax.annotate(prompt, (geom.centroid.x, geom.centroid.y), color="yellow", fontsize=6, ha="center")
    png = out / "vector_edit_224078.png"
    fig.savefig(png, dpi=110)
    print(f"figure  {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
