"""Fine-tune a model on your own rasters (LoRA), then use the result.

    python examples/04_train_finetune.py --out outputs
    python examples/04_train_finetune.py --small --model PATH        # seconds (CI)
    python examples/04_train_finetune.py --rasters my_a.tif my_b.tif --bands 3 2 1

Low-rank adapters (LoRA, via peft) are trained on the UNet's attention layers of a base
model ("default", or a checkpoint folder) with tiles cut from your rasters at several
GSDs and automatic captions; everything else stays frozen. The adapter is merged into a
normal checkpoint folder, which every geot2e function and the CLI accept as ``model=``.

The example writes the training config it runs to ``<out>/finetune/config.yaml`` (the
same file works with ``geot2e train``), trains, then inpaints a polygon of the first
raster with the fine-tuned model: ``<out>/finetuned_inpaint.tif`` (COG) and ``.png``.
By default it adapts the model to the committed 5 m RGBN aerial crop.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import geot2e
from geot2e.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
RGBN_CROP = ROOT / "tests" / "data" / "rgbn_5m_crop.tif"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--model", default="default", help="base model: 'default' or a checkpoint folder")
    p.add_argument("--small", action="store_true", help="a few training steps on tiny tiles (CI, seconds)")
    p.add_argument("--rasters", nargs="+", default=[str(RGBN_CROP)], help="your rasters (GeoTIFF/COG)")
    p.add_argument("--bands", nargs="+", type=int, default=[1, 2, 3],
                   help="1-based bands in the model's order, e.g. red green blue (default: 1 2 3)")
    p.add_argument("--nodata", type=float, default=None, help="nodata value of the rasters, if unset in the files")
    p.add_argument("--train-steps", type=int, default=None, help="adapter training steps (default: 300, 2 with --small)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (default: 8)")
    p.add_argument("--prompt", default="a pond surrounded by trees", help="prompt of the final inpainting")
    return p.parse_args(argv)


def base_model(name: str, out: Path) -> str:
    """``name``, or a tiny random stand-in (with a clear note) if the default is not installed."""
    if name != "default":
        return str(Path(name).resolve())
    try:
        geot2e.load_model("default")
        return name
    except CheckpointError as exc:
        from geot2e.models import Text2Earth, save_pretrained, tiny_config

        path = out / "tiny-random-model"
        print(f"note: {exc}\n      Adapting a tiny RANDOM model ({path}) instead: the pipeline runs, "
              "the result is noise.")
        if not (path / "config.json").is_file():
            save_pretrained(Text2Earth(tiny_config()), path)
        return str(path.resolve())


def training_config(args, out: Path, base: str) -> dict:
    """The training config: a ``lora`` section on top of ``base``, trained on ``args.rasters``."""
    steps = args.train_steps or (2 if args.small else 300)
    return {
        "out_dir": str((out / "finetune").resolve()),
        "base_model": base,
        "threads": 2,
        "tile": 32 if args.small else 64,
        "gsd_max": 80.0,
        "seed": 0,
        "sources": [{"path": str(Path(r).resolve()), "bands": list(args.bands),
                     **({"nodata": args.nodata} if args.nodata is not None else {})} for r in args.rasters],
        "lora": {"rank": args.rank, "alpha": args.rank, "merge": True},
        "denoiser": {"steps": steps, "batch_size": 2 if args.small else 16, "lr": 3e-4,
                     "warmup": 1 if args.small else 30, "ema_decay": 0.9 if args.small else 0.99,
                     "log_every": 1 if args.small else 25, "save_every": steps if args.small else 100,
                     "bf16": not args.small},
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    (out / "finetune").mkdir(parents=True, exist_ok=True)
    import yaml

    from geot2e.train import run_training

    base = base_model(args.model, out)
    cfg = training_config(args, out, base)
    cfg_path = out / "finetune" / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    print(f"config  {cfg_path} (also runs as: geot2e train {cfg_path})")
    print(f"train   LoRA rank {args.rank} on {len(args.rasters)} raster(s), {cfg['denoiser']['steps']} steps, "
          f"base model {base}")
    run_training(str(cfg_path), progress=not args.small)
    tuned = Path(cfg["out_dir"]) / "final"
    model = geot2e.load_model(tuned)
    print(f"model   {tuned}: {model.model_id}, checkpoint {model.checkpoint_hash}, bands {model.config.band_names}")

    # use it: inpaint a disc in the middle of the first raster with the fine-tuned model
    import geopandas as gpd
    from shapely.geometry import Point

    da = geot2e.io.open_raster(args.rasters[0], bands=args.bands, nodata=args.nodata)
    if args.small:
        da = da.isel(y=slice(96, 160), x=slice(96, 160))
    cx, cy = (sum(da.rio.bounds()[i::2]) / 2 for i in (0, 1))
    radius = min(da.rio.width, da.rio.height) * abs(da.rio.resolution()[0]) / 6
    disc = gpd.GeoSeries([Point(cx, cy).buffer(radius)], crs=da.rio.crs)  # geometries carry their CRS
    filled = geot2e.inpaint(da, disc, args.prompt, model=str(tuned), steps=2 if args.small else 25,
                            **(dict(tile=32, overlap=8) if args.small else {}))
    path = geot2e.io.to_cog(filled, out / "finetuned_inpaint.tif", overwrite=True)
    print(f"COG     {path}: {geot2e.io.open_raster(path).rio.crs}, {int(filled.synthesized.sum())} px from "
          f"{filled.attrs['geot2e_model_id']} ({filled.attrs['geot2e_checkpoint_hash']})")
    fig = geot2e.plot.compare(da, filled, mask=filled.synthesized,
                              titles=("your raster", f"fine-tuned model: {args.prompt!r}", "mask"))
    fig.savefig(out / "finetuned_inpaint.png", dpi=110)
    print(f"figure  {out / 'finetuned_inpaint.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
