"""The ``geot2e`` command line: cloud removal, inpainting, outpainting, generation,
training, evaluation and model information on GeoTIFF/COG/Zarr rasters.

Run ``geot2e --help`` and ``geot2e <command> --help``: every command shows a worked
example. Exit codes:

====  =====================================================================
code  meaning
====  =====================================================================
0     success
1     unexpected error (a bug: rerun with ``--debug`` and report the traceback)
2     usage error (unknown option, missing argument, bad number)
3     bad input (missing or unreadable file, wrong grid, empty mask, bad option
      value, output exists): every :class:`geot2e.errors.Geot2eError`
4     model or checkpoint error (missing, corrupt or mismatched checkpoint)
130   interrupted (Ctrl-C, SIGINT)
143   terminated (SIGTERM, as sent by ``timeout``, ``kill`` and job schedulers)
====  =====================================================================

An interrupted or terminated run cleans up like a failed one: no output file and no
temporary is left (a resumable Zarr store keeps its finished blocks). Options that only
the writer uses (``--compress``, ``--blocksize``, the input's dtype) and OUTPUT itself are
checked before the model runs; OUTPUT may not be one of the input files.

Errors are printed as one line, ``geot2e: error: <message>``; ``--debug`` adds the
traceback. Warnings are printed as ``geot2e: warning: <message>``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_INPUT", "EXIT_MODEL"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INPUT, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_TERMINATED = 143

VECTOR_SUFFIXES = {".gpkg", ".geojson", ".json", ".shp", ".fgb", ".parquet", ".geoparquet", ".kml", ".gml",
                   ".sqlite", ".gdb", ".zip"}
QA_KINDS = ("landsat_qa_pixel", "sentinel2_scl")


class UsageError(Exception):
    """A command line that cannot be run as written (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors become one line and exit code 2 (via :class:`UsageError`)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{message} (see '{self.prog} --help')")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=30, width=100)


# --------------------------------------------------------------------------- option types
def _int_or_name(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def _chunks(text: str) -> int | str:
    if text == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of pixels, got {text!r}") from None
    if n < 16:
        raise argparse.ArgumentTypeError(f"chunks must be at least 16 pixels, got {n}")
    return n


# --------------------------------------------------------------------------- parser
EPILOGS = {
    "remove-clouds": """\
examples:
  # cloud polygons digitized in any CRS (here EPSG:4326) over a Landsat 8 crop -> COG
  geot2e remove-clouds tests/data/landsat_224078_rgb_crop.tif filled.tif \\
      --mask examples/data/clouds_224078.gpkg --seed 0

  # a Landsat Collection 2 scene: stack the bands (red, green, blue), mask from QA_PIXEL
  gdalbuildvrt -separate rgb.vrt LC09_*_SR_B4.TIF LC09_*_SR_B3.TIF LC09_*_SR_B2.TIF
  geot2e remove-clouds rgb.vrt filled.tif --qa LC09_*_QA_PIXEL.TIF \\
      --qa-kind landsat_qa_pixel --buffer 60 --chunks 1024

  # Sentinel-2 L2A: the 20 m SCL band is resampled (nearest) onto the 10 m grid
  geot2e remove-clouds s2_rgb.tif filled.zarr --qa SCL_20m.jp2 --qa-kind sentinel2_scl
""",
    "inpaint": """\
examples:
  # one prompt for every polygon
  geot2e inpaint tests/data/landsat_224078_rgb_crop.tif edited.tif \\
      --mask tests/data/landsat_224078_polygons.geojson --prompt "dense green forest"

  # a prompt map: each polygon filled with the text of its 'prompt' column
  geot2e inpaint tests/data/landsat_224078_rgb_crop.tif edited.tif \\
      --mask examples/data/edits_224078.gpkg --prompt-column prompt --samples 4
""",
    "outpaint": """\
examples:
  # grow the scene by 128 pixels to the east and 64 to the south (same CRS and GSD)
  geot2e outpaint tests/data/landsat_224078_rgb_crop.tif grown.tif \\
      --right 128 --bottom 64 --prompt "farmland with a river"

  # the same on every side
  geot2e outpaint tests/data/landsat_224078_rgb_crop.tif grown.tif --all 64
""",
    "generate": """\
examples:
  # on the grid (extent, CRS, GSD, dtype) of an existing raster
  geot2e generate new.tif --prompt "a lake among forests" \\
      --like tests/data/landsat_224078_rgb_crop.tif

  # from bounds in a CRS, at 10 m ground sample distance
  geot2e generate new.tif --prompt "farmland" --bounds 737145 -2791095 742265 -2785695 \\
      --crs EPSG:32621 --gsd 10
""",
    "translate": """\
examples:
  # super-resolution: a grid twice as fine, same bounds and CRS
  geot2e translate super_resolution tests/data/landsat_224078_rgb_crop.tif sr.tif --scale 2

  # pan-sharpening: Landsat 8 B4 B3 B2 (30 m) with B8 (15 m); --align-pan resamples the PAN
  # onto the 30 m grid's refinement first (Landsat's PAN is offset by half a PAN pixel)
  geot2e translate pansharpen rgb_30m.tif sharp.tif --pan LC08_B8.TIF --align-pan

  # NIR to RGB, and haze / thin cloud removal, on the input's grid
  geot2e translate nir_to_rgb s2.tif rgb.tif --bands B08
  geot2e translate dehaze hazy.tif clear.tif
  # a raster hazy all over: take the value scaling from a clear acquisition of the place
  geot2e translate dehaze hazy.tif clear.tif --scaling-from last_month.tif
""",
    "train": """\
examples:
  # train (or resume) the model described by a YAML config: VAE, denoiser, fine-tune
  geot2e train configs/default.yaml
  # start again from scratch
  geot2e train my_config.yaml --no-resume
  # a seconds-long smoke run on the committed crops, in 2 processes
  geot2e train configs/tiny_test.yaml --nproc 2
  # only the decoder fine-tune (needs the finished VAE stage)
  geot2e train configs/default.yaml --stage decoder
  # add a dehazing network beside the default model (needs no other stage)
  geot2e train configs/dehaze.yaml
  # on 4 GPUs of one machine (one process per GPU, nccl)
  geot2e train configs/default.yaml --nproc 4 --device cuda
""",
    "eval": """\
examples:
  # the full protocol on the default model, results also as JSON
  geot2e eval --model default --json eval.json
  # a quick run (cloud removal only, few crops and steps)
  geot2e eval --model ./my_model --small
  # protocol options pass through, e.g. only the GSD probe with 10 steps
  geot2e eval --only resolution --steps 10
""",
    "info": """\
examples:
  geot2e info                      # the embedded default model
  geot2e info --model ./my_model   # a checkpoint folder
  geot2e info --json               # machine-readable
""",
}

MAIN_EPILOG = """\
commands' examples: geot2e <command> --help

quick start:
  geot2e info
  geot2e remove-clouds tests/data/landsat_224078_rgb_crop.tif filled.tif \\
      --mask examples/data/clouds_224078.gpkg

exit codes: 0 ok, 1 unexpected error, 2 usage, 3 bad input, 4 model/checkpoint error,
            130 interrupted, 143 terminated (SIGTERM)
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback on errors")


def _add_input(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input raster")
    g.add_argument("input", metavar="INPUT", help="GeoTIFF, COG, VRT or Zarr store (band, y, x) with a CRS")
    g.add_argument("--bands", nargs="+", type=_int_or_name, metavar="B",
                   help="bands to use (1-based numbers or descriptions), e.g. --bands 4 3 2; NUMBER=ROLE selects "
                        "and names them (--bands 2=blue 3=green 4=red 5=nir); role or sensor names alone name "
                        "every band of the file in order (--bands blue green red nir swir1 swir2, or B02 B03 "
                        "B04 B08): bands beyond red, green, blue are filled by the spectral head")
    g.add_argument("--nodata", type=float, help="nodata value to use when the file has none (e.g. 0)")
    g.add_argument("--chunks", type=_chunks, metavar="N|auto",
                   help="process lazily with dask in N x N pixel chunks (large rasters); "
                        "default: read into memory")


def _add_output(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("output", metavar="OUTPUT",
                   help="output path: a COG (.tif), or a Zarr v3 store if it ends in .zarr (an existing "
                        "store on the same grid is resumed: finished blocks are skipped)")
    g.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    g.add_argument("--compress", default="deflate", help="COG compression (default: deflate)")
    g.add_argument("--blocksize", type=int, default=512, help="COG tile / Zarr chunk size (default: 512)")


def _add_model(p: argparse.ArgumentParser, *, gsd_help: str | None = None, operation: str | None = None,
               modality: bool = False) -> None:
    """The shared options of the public functions; defaults and help from :mod:`geot2e.sampling`.
    ``operation`` (inpaint, remove_clouds) adds the options only those have (--few-step);
    ``modality`` adds --modality (every function but translate)."""
    from .sampling import SCHEDULER_CHOICES, fill_doc, options

    d = options("inpaint")  # the options the CLI leaves as None take each operation's own default
    g = p.add_argument_group("model and sampling")
    g.add_argument("--model", default=d["model"],
                   help="'default' (embedded model) or a checkpoint folder (default: %(default)s)")
    if modality:
        from .models.modality import MODALITIES

        g.add_argument("--modality", default=None, metavar="NAME",
                       help=f"generate another kind of image with the model's adapter for it: "
                            f"{', '.join(f'{k} ({v.description})' for k, v in MODALITIES.items() if v.adapter)}; "
                            "INPUT then holds that modality's bands (default: RGB); generate also takes "
                            f"{', '.join(f'{k} ({v.description})' for k, v in MODALITIES.items() if v.composite)}")
    if operation is not None:
        default = ("the model's student when it has one and --guidance/--steps are not given"
                   if options(operation)["few_step"] is None else "off")
        g.add_argument("--few-step", action=argparse.BooleanOptionalAction, default=None,
                       help=f"sample with the model's few-step student (unguided, 8 UNet passes for the default "
                            f"model); --no-few-step: the full sampler (default: {default})")
    g.add_argument("--guidance", type=float, default=None,
                   help=fill_doc("classifier-free guidance ω, >= 0 (default: {default_guidance}; remove-clouds: "
                                 "{one_guidance} for one sample, {k_guidance} for a mean of --samples)"))
    g.add_argument("--guidance-interval", type=float, default=None, metavar="SHARE",
                   help=fill_doc("share of the steps, noisiest first, that use guidance, in [0, 1] (default: "
                                 "{clouds_guidance_interval} for remove-clouds, {default_guidance_interval} "
                                 "otherwise)"))
    g.add_argument("--steps", type=int, default=None,
                   help=fill_doc("denoising steps (default: the model's, {model_steps} for geot2e models; "
                                 "remove-clouds: {one_steps} for one sample, {k_steps} for a mean of --samples)"))
    g.add_argument("--seed", type=int, default=d["seed"],
                   help="seed: the same seed gives the same pixels for any chunking (default: %(default)s)")
    g.add_argument("--samples", type=int, default=d["samples"],
                   help="K samples: K > 1 writes their mean, and their per-pixel spread to "
                        "OUTPUT's '.uncertainty' companion (default: %(default)s)")
    g.add_argument("--tile", type=int, default=d["tile"], help="tile size in pixels (default: %(default)s)")
    g.add_argument("--overlap", type=int, default=d["overlap"],
                   help="tile halo in pixels (default: %(default)s)")
    g.add_argument("--gsd", type=float, default=None,
                   help=gsd_help or "ground sample distance (m) told to the model instead of the raster's own")
    g.add_argument("--device", default=d["device"], help="torch device: auto, cpu, cuda, cuda:1, ...")
    g.add_argument("--scheduler", default=d["scheduler"], choices=SCHEDULER_CHOICES,
                   help=fill_doc("sampler; auto = the model's own ({model_scheduler} for geot2e models, the "
                                 "folder's scheduler for official Text2Earth folders) (default: %(default)s)"))
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per tile (default: torch's current count); the same value "
                        "reproduces a result bit for bit")
    g.add_argument("--harmonize", default=None, choices=("lowpass", "boundary", "none"),
                   help=fill_doc("how the fill's colour meets the known pixels (default: {clouds_harmonize} for "
                                 "remove-clouds, the model's otherwise: {model_harmonize} for geot2e models)"))


def build_parser() -> argparse.ArgumentParser:
    """The ``geot2e`` argument parser (subcommands and their options)."""
    from ._version import __version__

    parser = _Parser(prog="geot2e", formatter_class=_Formatter, epilog=MAIN_EPILOG,
                     description="Text2Earth-style generative editing of georeferenced rasters: fill clouds, "
                                 "edit under polygons, extend scenes, generate new ones, at the right ground "
                                 "sample distance, written as Cloud-Optimized GeoTIFFs or Zarr.")
    parser.add_argument("--version", action="version", version=f"geot2e {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def add(name: str, help_: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=description, epilog=EPILOGS[name],
                           formatter_class=_Formatter)
        return p

    p = add("remove-clouds", "fill clouds and cloud shadows",
            "Replace cloudy pixels by plausible cloud-free ground. The mask comes from polygons "
            "(--mask, a vector file in any CRS, or a raster whose non-zero pixels are clouds) and/or "
            "from a quality band (--qa). Pixels outside the mask are copied bit for bit.")
    _add_input(p)
    _add_output(p)
    g = p.add_argument_group("cloud mask (at least one of --mask, --qa)")
    g.add_argument("--mask", metavar="PATH", help="cloud polygons (GeoPackage, GeoJSON, Shapefile...) "
                                                  "or a mask raster (non-zero = cloud)")
    g.add_argument("--qa", metavar="PATH", help="quality band raster: Landsat QA_PIXEL or Sentinel-2 SCL")
    g.add_argument("--qa-kind", default="landsat_qa_pixel", choices=QA_KINDS,
                   help="how to decode --qa (default: %(default)s)")
    g.add_argument("--qa-classes", nargs="+", metavar="C", type=_int_or_name,
                   help="classes to fill (e.g. cloud shadow cirrus; default: clouds, cirrus and shadows)")
    g.add_argument("--buffer", type=float, default=0.0, metavar="M",
                   help="grow the mask by M metres on the ground (default: 0)")
    g.add_argument("--prompt", default="", help="optional text for the filled ground (default: none)")
    _add_model(p, operation="remove_clouds", modality=True)
    _add_common(p)

    p = add("inpaint", "synthesize the pixels under polygons from text",
            "Synthesize the pixels under a mask from a text prompt, or from a prompt per polygon "
            "(--prompt-column). Pixels outside the mask are copied bit for bit.")
    _add_input(p)
    _add_output(p)
    g = p.add_argument_group("mask and prompt")
    g.add_argument("--mask", metavar="PATH", required=True,
                   help="polygons (vector file, any CRS) or a mask raster (non-zero = synthesize)")
    pr = g.add_mutually_exclusive_group()
    pr.add_argument("--prompt", default="", help="text for the masked area")
    pr.add_argument("--prompt-column", metavar="COLUMN",
                    help="column of the vector file holding each polygon's prompt (a prompt map)")
    g.add_argument("--buffer", type=float, default=0.0, metavar="M",
                   help="grow the polygons by M metres (not with --prompt-column; default: 0)")
    _add_model(p, operation="inpaint", modality=True)
    _add_common(p)

    p = add("outpaint", "extend a raster beyond its edges",
            "Extend a raster by whole pixels on any side, with the same CRS and pixel size; the "
            "original pixels keep their coordinates and values.")
    _add_input(p)
    _add_output(p)
    g = p.add_argument_group("extension")
    for side in ("left", "right", "top", "bottom"):
        g.add_argument(f"--{side}", type=int, default=0, metavar="N", help=f"pixels to add on the {side}")
    g.add_argument("--all", type=int, default=None, metavar="N", help="pixels to add on every side")
    g.add_argument("--prompt", default="", help="text for the new area")
    _add_model(p, modality=True)
    _add_common(p)

    p = add("generate", "generate a new georeferenced scene from text",
            "Generate a new scene from text on a grid given by a template raster (--like) or by "
            "--bounds, --crs and --gsd (or --shape).")
    _add_output(p)
    g = p.add_argument_group("scene")
    g.add_argument("--prompt", required=True, help="what the scene shows")
    g.add_argument("--like", metavar="RASTER", help="take grid, CRS, dtype and value range from this raster")
    g.add_argument("--bounds", nargs=4, type=float, metavar=("LEFT", "BOTTOM", "RIGHT", "TOP"),
                   help="extent in --crs units")
    g.add_argument("--crs", help="CRS of --bounds, e.g. EPSG:32621")
    g.add_argument("--shape", nargs=2, type=int, metavar=("HEIGHT", "WIDTH"),
                   help="canvas size in pixels (with --bounds, instead of --gsd)")
    _add_model(p, gsd_help="ground sample distance in metres: the pixel size with --bounds, "
                              "or what the model is told with --like", modality=True)
    _add_common(p)

    p = add("translate", "pan-sharpen, super-resolve, NIR to RGB, dehaze",
            "Image-to-image translation with the model's translation ControlNet. super_resolution and "
            "pansharpen write a finer grid (--scale times finer, or the PAN grid); nir_to_rgb and dehaze "
            "keep the input's grid. Every output pixel is synthesized.")
    from .sampling import SR_SCALES, TRANSLATION_TASKS as TASKS

    p.add_argument("task", metavar="TASK", choices=TASKS, help=f"one of {', '.join(TASKS)}")
    _add_input(p)
    _add_output(p)
    g = p.add_argument_group("translation")
    g.add_argument("--pan", metavar="PATH", help="pansharpen: the panchromatic band (a finer grid that refines "
                                                 "INPUT's)")
    g.add_argument("--align-pan", action="store_true",
                   help="resample --pan onto the integer refinement of INPUT's grid first (bilinear; for PAN "
                        "bands whose pixel edges are offset from the multispectral ones, as Landsat's)")
    g.add_argument("--scale", type=int, choices=SR_SCALES, help="super_resolution: how many times finer")
    g.add_argument("--strength", type=float, default=None, metavar="S",
                   help="where sampling starts, in (0, 1]: the input noised to this share of the steps; 1 = "
                        "pure noise (default: the task's, measured)")
    g.add_argument("--scaling-from", metavar="PATH", default=None,
                   help="fit the value scaling on this raster (same sensor and bands, e.g. a clear acquisition "
                        "of the place) instead of on INPUT: dehaze needs it for a raster hazy all over, whose own "
                        "percentiles cannot tell a uniform haze from the ground's contrast")
    g.add_argument("--prompt", default="", help="optional text (default: none)")
    _add_model(p)
    _add_common(p)

    p = add("train", "train or fine-tune a model from a YAML/TOML config",
            "Run the training stages of a config file (VAE, denoiser, optional fine-tune). Every stage "
            "resumes from its last checkpoint unless --no-resume.")
    p.add_argument("config", metavar="CONFIG", help="training config (YAML or TOML), e.g. configs/default.yaml")
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints in the run folder")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="data-parallel processes (gloo on CPU, nccl with one GPU each); overrides the "
                        "config's world_size")
    p.add_argument("--device", default=None, help="training device (cpu, cuda, auto); overrides the config")
    p.add_argument("--out-dir", default=None, metavar="DIR", help="run folder; overrides the config's out_dir")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads; overrides the config's threads (1 is faster on a machine busy with other work)")
    p.add_argument("--write-pack", default=None, metavar="DIR",
                   help="write the config's sources and validation tiles as a tile pack to DIR and stop "
                        "(train from it with 'pack: DIR' in a config, e.g. on a GPU machine without the raster stack)")
    p.add_argument("--stage", action="append", default=None, metavar="NAME",
                   help="run only this configured stage (vae, denoiser, finetune, decoder, detail, distill, control, haze, sr); "
                        "repeatable. "
                        "E.g. --stage decoder trains the decoder while another process trains the denoiser; "
                        "only a run of all stages exports the model")
    _add_common(p)

    p = add("eval", "evaluate a model (the project's evaluation protocol)",
            "Run the evaluation protocol (geot2e.eval.protocol: cloud removal on the held-out sets against "
            "classical fills, GSD control, text control) and print the tables. Options not listed here are "
            "passed to the protocol (see 'python -m geot2e.eval.protocol --help').")
    p.add_argument("--model", default="default", help="'default' or a checkpoint folder (default: %(default)s)")
    p.add_argument("--json", metavar="PATH", help="also write all results to this JSON file")
    p.add_argument("--small", action="store_true",
                   help="a quick run: cloud removal only, 4 crops, 10 steps")
    p.add_argument("--device", default="auto", help="torch device (default: %(default)s)")
    _add_common(p)

    p = add("info", "summarize a model: id, hash, bands, GSD range, parameters",
            "Print a model card summary of a checkpoint: model id, checkpoint hash, bands, the GSD "
            "range it was trained on, architecture and parameter counts.")
    p.add_argument("--model", default="default", help="'default' or a checkpoint folder (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_common(p)
    return parser


# --------------------------------------------------------------------------- helpers
def _say(msg: str) -> None:
    print(f"geot2e: {msg}", file=sys.stderr)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _is_zarr(path: str | os.PathLike) -> bool:
    from .io.zarr_store import store_exists

    return Path(path).suffix.lower() == ".zarr" or store_exists(path)


def _require(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if "://" not in str(path) and not str(path).startswith("/vsi") and not p.exists():
        raise _InputError(f"{what} not found: {p}; check the path.")
    return p


class _InputError(Exception):
    """Bad input found by the CLI itself (exit code 3)."""


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that every cleanup path runs (exit 143)."""


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return pa.resolve() == pb.resolve()


def _check_not_an_input(args) -> None:
    """OUTPUT may not be a file the command reads (as gdal_translate refuses), --overwrite or not:
    the input would be replaced by a result computed from it, or deleted on failure."""
    out = getattr(args, "output", None)
    if out is None or "://" in str(out):
        return
    for opt in ("input", "like", "mask", "qa"):
        src = getattr(args, opt, None)
        if src and "://" not in str(src) and _same_file(out, src):
            name = "INPUT" if opt == "input" else f"--{opt}"
            raise UsageError(f"OUTPUT {out} is the same file as {name}; write the result to another path "
                             "(the input is never replaced, --overwrite or not)")


def _check_writable(args, dtype) -> None:
    """The writer's options and the result's dtype, checked before the model runs."""
    if _is_zarr(args.output):
        if args.blocksize < 16:
            raise UsageError(f"--blocksize must be at least 16 pixels, got {args.blocksize}")
        return
    from .io.cog import check_cog_options

    check_cog_options(compress=args.compress, blocksize=args.blocksize, dtype=dtype)


def _check_output(path: str, overwrite: bool, samples: int = 1) -> Path:
    """Check OUTPUT (and its uncertainty companion when samples > 1) before any work.
    An existing Zarr store is resumed (finished blocks skipped)."""
    from .io._paths import check_output_path
    from .io.uncertainty import companion_path
    from .io.zarr_store import store_exists

    if samples > 1:
        _check_output(str(companion_path(path)), overwrite)

    if _is_zarr(path):
        p = Path(path).expanduser()
        resume = store_exists(p) and not overwrite
        dest = check_output_path(path, overwrite=overwrite or resume, kind="store")
        if resume:
            _say(f"note: {p} exists: resuming it (finished blocks are skipped; --overwrite starts again)")
        return dest
    return check_output_path(path, overwrite=overwrite, kind="file")


def _open(args) -> Any:
    """Open INPUT. ``--bands`` selects bands (numbers or descriptions, as before), selects and
    names them (``NUMBER=ROLE``), or, when every item is a band role or sensor band name that
    is not one of the file's descriptions, names every band of the file in order; the names
    go to the public function as ``bands=`` (:mod:`geot2e.geo.bands`)."""
    from .geo.bands import role_of
    from .io import open_raster

    _require(args.input, "input raster")
    items, roles = args.bands, None
    if items and any(isinstance(b, str) and "=" in b for b in items):
        if not all(isinstance(b, str) and "=" in b for b in items):
            raise _InputError(f"--bands {' '.join(map(str, items))}: give every band as NUMBER=ROLE (e.g. --bands "
                                "2=blue 3=green 4=red 5=nir), or none of them.")
        pairs = [b.split("=", 1) for b in items]
        items, roles = [_int_or_name(n) for n, _ in pairs], [r for _, r in pairs]
    elif items and all(isinstance(b, str) and role_of(b) for b in items):
        whole = open_raster(args.input, chunks=args.chunks, nodata=args.nodata)
        ln = whole.attrs.get("long_name")
        names = {str(v) for v in ([ln] if isinstance(ln, str) else list(ln or ()))}
        names |= {str(v) for v in whole["band"].values} if "band" in whole.coords else set()
        if not any(b in names for b in items):
            args.band_roles = list(items)
            return whole
    args.band_roles = roles
    return open_raster(args.input, chunks=args.chunks, bands=items, nodata=args.nodata)


def _is_vector_path(path: Path) -> bool:
    if path.suffix.lower() in VECTOR_SUFFIXES:
        return True
    if path.suffix.lower() in {".tif", ".tiff", ".vrt", ".zarr", ".img", ".jp2", ".nc"} or path.is_dir():
        return False
    return True


def _onto_grid(mask_da, da, *, name: str):
    """A (y, x) bool mask on ``da``'s grid (:func:`geot2e.geo.mask_onto_grid`), with a note when
    it had to be resampled."""
    from .errors import GridMismatchError
    from .geo import assert_same_grid, mask_onto_grid

    if "band" in mask_da.dims:
        mask_da = mask_da.isel(band=0, drop=True)
    try:
        assert_same_grid(mask_da, da)
    except GridMismatchError:
        if mask_da.rio.crs is not None:
            _say(f"note: the {name} is on another grid; resampling it onto the input's grid")
    return mask_onto_grid(mask_da, da, name=name)


def _raster_mask(path: Path, da, *, name: str):
    from .io import open_raster

    return _onto_grid(open_raster(path), da, name=name)  # nonzero = masked; NaN and nodata are not


def _vector_mask(path: Path, da, *, buffer: float):
    from .geo import geometry_mask, read_vector

    return geometry_mask(read_vector(path), like=da, buffer_m=buffer)


def _mask_from(path: str, da, *, buffer: float, name: str = "mask"):
    p = _require(path, f"{name} file")
    if _is_vector_path(p):
        return _vector_mask(p, da, buffer=buffer)
    m = _raster_mask(p, da, name=name)
    if buffer:
        from .geo import dilate_mask

        m = dilate_mask(m, buffer)
    return m


def _opts(args) -> dict[str, Any]:
    return dict(model=args.model, seed=args.seed,
                **{k: getattr(args, k) for k in ("guidance", "steps") if getattr(args, k) is not None},
                samples=args.samples, tile=args.tile, overlap=args.overlap, gsd=args.gsd, device=args.device,
                scheduler=args.scheduler, progress=False if args.no_progress else None,
                threads=args.threads,
                **({} if getattr(args, "harmonize", None) is None else {"harmonize": args.harmonize}),
                **({} if getattr(args, "guidance_interval", None) is None
                   else {"guidance_interval": args.guidance_interval}),
                **({} if getattr(args, "band_roles", None) is None else {"bands": args.band_roles}),
                **({} if getattr(args, "few_step", None) is None else {"few_step": args.few_step}),
                **({} if getattr(args, "modality", None) is None else {"modality": args.modality}))


def _file_id(path: Path):
    """(device, inode) of a file, or None: os.replace gives a published output a new one."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _write(da, path: Path, args) -> Path:
    """Write ``da`` to ``path`` (COG, or Zarr for .zarr); K > 1 samples: an uncertainty companion.
    Then print the summary line.

    All or nothing for COGs: an interruption (Ctrl-C, SIGTERM) or error at any moment, also after
    OUTPUT was published but before its companion was, removes the files this call published,
    so no partial output set is left and "no output was written" holds. A Zarr store stays as it
    is (it records its finished blocks and is resumed by the next run).
    """
    from .io import to_cog
    from .io._paths import remove_quietly
    from .io.uncertainty import companion_path, uncertainty_of

    progress = not args.no_progress
    unc = None
    if "uncertainty" in da.coords:
        unc = uncertainty_of(da)
        da = da.drop_vars("uncertainty")
    targets = [path] + ([companion_path(path)] if unc is not None else [])
    before = {p: _file_id(p) for p in targets if not _is_zarr(p)}
    try:
        if _is_zarr(path):
            _write_zarr(da, path, overwrite=args.overwrite, chunks=args.blocksize, progress=progress)
        else:
            to_cog(da, path, overwrite=args.overwrite, compress=args.compress, blocksize=args.blocksize,
                   progress=progress)
        if unc is not None:  # the companion as geot2e.io.uncertainty writes it; Zarr resumable as OUTPUT
            cpath = companion_path(path)
            if _is_zarr(cpath):
                _write_zarr(unc, cpath, overwrite=args.overwrite, chunks=args.blocksize)
            else:
                to_cog(unc, cpath, overwrite=args.overwrite, compress=args.compress, blocksize=args.blocksize,
                       synthesized="none")
            _say(f"wrote the per-pixel spread of {da.attrs.get('geot2e_samples', '?')} samples to {cpath}")
        print(_summary(da, path))
    except BaseException:
        for p, old in before.items():
            new = _file_id(p)
            if new is not None and new != old:  # published by this call
                remove_quietly(p)
        raise
    return path


def _write_zarr(da, path: Path, *, overwrite: bool, chunks: int, progress: bool = False) -> None:
    """Write (or resume) a Zarr v3 store block by block, recording finished blocks."""
    from .engine.zarr import write_to_zarr

    if not hasattr(da.data, "dask"):
        da = da.chunk({d: chunks for d in da.dims[-2:]})
    bar = contextlib.nullcontext()
    if progress:
        from dask.diagnostics import ProgressBar

        bar = ProgressBar(minimum=2.0, out=sys.stderr)
    with bar:
        write_to_zarr(da, path, overwrite=overwrite)


def _summary(da, path: Path) -> str:
    import numpy as np

    from .geo import spatial_dims

    y, x = spatial_dims(da)
    kind = "Zarr" if _is_zarr(path) else "COG"
    crs = da.rio.crs
    crs_txt = (f"EPSG:{crs.to_epsg()}" if crs is not None and crs.to_epsg() else (crs.to_string()[:30] if crs else "no CRS"))
    nb = int(np.prod([da.sizes[d] for d in da.dims if d not in (y, x)])) if da.ndim > 2 else 1
    parts = [f"wrote {path} ({kind}; {nb} band(s) x {da.sizes[y]} x {da.sizes[x]} {da.dtype}, {crs_txt}"]
    gsd = da.attrs.get("geot2e_gsd")
    if isinstance(gsd, (int, float)):
        parts.append(f", GSD {gsd:.3g} m")
    parts.append(")")
    if "synthesized" in da.coords:
        s = da.coords["synthesized"]
        n = int(np.asarray(s.sum()))
        parts.append(f"; {n:,} pixels synthesized ({100.0 * n / max(1, s.size):.1f} %)")
    mid, h = da.attrs.get("geot2e_model_id"), da.attrs.get("geot2e_checkpoint_hash")
    if mid:
        parts.append(f"; model {mid}" + (f" ({h})" if h else ""))
    return "".join(parts)


# --------------------------------------------------------------------------- commands
def cmd_remove_clouds(args) -> int:
    import geot2e

    if not args.mask and not args.qa:
        raise UsageError("remove-clouds needs a cloud mask: --mask PATH and/or --qa PATH "
                         "(see 'geot2e remove-clouds --help')")
    _check_not_an_input(args)
    out = _check_output(args.output, args.overwrite, args.samples)
    da = _open(args)
    _check_writable(args, da.dtype)
    masks = []
    if args.mask:
        masks.append(_mask_from(args.mask, da, buffer=args.buffer, name="mask"))
    if args.qa:
        from .io import open_raster

        qa = open_raster(_require(args.qa, "QA raster"), chunks=args.chunks)
        cm = geot2e.cloud_mask(qa, kind=args.qa_kind, buffer_m=args.buffer, classes=args.qa_classes)
        masks.append(_onto_grid(cm, da, name="QA mask"))
    mask = masks[0] if len(masks) == 1 else (masks[0] | masks[1])
    result = geot2e.remove_clouds(da, mask, prompt=args.prompt, **_opts(args))
    _write(result, out, args)
    return EXIT_OK


def cmd_inpaint(args) -> int:
    import geot2e

    _check_not_an_input(args)
    out = _check_output(args.output, args.overwrite, args.samples)
    da = _open(args)
    _check_writable(args, da.dtype)
    prompt = args.prompt
    if args.prompt_column:
        if args.buffer:
            raise UsageError("--buffer cannot be combined with --prompt-column; buffer the polygons first")
        p = _require(args.mask, "mask file")
        if not _is_vector_path(p):
            raise UsageError("--prompt-column needs a vector --mask (GeoPackage, GeoJSON, Shapefile...)")
        from .geo import read_vector

        mask = read_vector(p)
        if args.prompt_column not in mask.columns or args.prompt_column == mask.geometry.name:
            cols = [c for c in mask.columns if c != mask.geometry.name]
            raise _InputError(f"{p} has no column {args.prompt_column!r}; its columns are {cols}.")
        prompt = args.prompt_column
    else:
        mask = _mask_from(args.mask, da, buffer=args.buffer)
    result = geot2e.inpaint(da, mask, prompt, **_opts(args))
    _write(result, out, args)
    return EXIT_OK


def cmd_translate(args) -> int:
    import geot2e

    _check_not_an_input(args)
    if args.harmonize is not None:
        raise UsageError("--harmonize does not apply to translate (every pixel is synthesized)")
    if args.pan and args.task != "pansharpen":
        raise UsageError(f"--pan is the PAN band of 'pansharpen'; {args.task} takes none")
    if args.task == "pansharpen" and not args.pan:
        raise UsageError("pansharpen needs the PAN band: --pan PATH")
    if args.task == "super_resolution" and args.scale is None:
        raise UsageError("super_resolution needs --scale 2 or --scale 4")
    out = _check_output(args.output, args.overwrite, args.samples)
    da = _open(args)
    _check_writable(args, da.dtype)
    control = None
    if args.pan:
        from .io import open_raster

        control = open_raster(_require(args.pan, "PAN raster"), chunks=args.chunks)
        if args.align_pan:
            from .geo.refine import align_to_refinement

            control = align_to_refinement(control, da)
    if getattr(args, "band_roles", None) is not None:      # names the bands; translate picks them by role
        da = da.assign_coords(band=[str(r) for r in args.band_roles])
    opts = {k: v for k, v in _opts(args).items() if k not in ("bands", "harmonize", "few_step")}
    if args.scaling_from:
        from .io import open_raster
        from .translation import scaling_of

        ref = open_raster(_require(args.scaling_from, "scaling reference raster"), chunks=args.chunks)
        if getattr(args, "band_roles", None) is not None and ref.sizes.get("band") == len(args.band_roles):
            ref = ref.assign_coords(band=[str(r) for r in args.band_roles])
        opts["radiometry"] = scaling_of(ref, args.task)
    result = geot2e.translate(da, args.task, control=control, scale=args.scale, prompt=args.prompt,
                              strength=args.strength, **opts)
    _write(result, out, args)
    return EXIT_OK


def cmd_outpaint(args) -> int:
    import geot2e

    sides = {s: getattr(args, s) for s in ("left", "right", "top", "bottom")}
    if args.all is not None:
        if any(sides.values()):
            raise UsageError("give either --all or --left/--right/--top/--bottom, not both")
        sides = {s: args.all for s in sides}
    if not any(sides.values()):
        raise UsageError("outpaint needs pixels to add: --left/--right/--top/--bottom N or --all N")
    _check_not_an_input(args)
    out = _check_output(args.output, args.overwrite, args.samples)
    da = _open(args)
    _check_writable(args, da.dtype)
    result = geot2e.outpaint(da, prompt=args.prompt, **sides, **_opts(args))
    _write(result, out, args)
    return EXIT_OK


def cmd_generate(args) -> int:
    import geot2e

    if args.like is None and args.bounds is None:
        raise UsageError("generate needs a grid: --like RASTER, or --bounds with --crs and --gsd (or --shape)")
    if args.like is not None and (args.bounds is not None or args.shape is not None or args.crs is not None):
        raise UsageError("--like takes the grid from a raster; do not combine it with --bounds/--crs/--shape")
    if args.bounds is not None and args.crs is None:
        raise UsageError("--bounds needs --crs (the CRS of the bounds)")
    if args.bounds is not None and args.gsd is None and args.shape is None:
        raise UsageError("--bounds needs --gsd (metres per pixel) or --shape HEIGHT WIDTH")
    _check_not_an_input(args)
    out = _check_output(args.output, args.overwrite, args.samples)
    like = None
    if args.like is not None:
        from .io import open_raster

        like = open_raster(_require(args.like, "--like raster"))
    _check_writable(args, like.dtype if like is not None else "float32")
    opts = _opts(args)
    gsd = opts.pop("gsd")
    result = geot2e.generate(args.prompt, like=like, bounds=tuple(args.bounds) if args.bounds else None,
                             crs=args.crs, gsd=gsd, shape=tuple(args.shape) if args.shape else None, **opts)
    _write(result, out, args)
    return EXIT_OK


def cmd_train(args) -> int:
    from .train import load_train_config, run_training

    cfg_path = _require(args.config, "training config")
    cfg = load_train_config(cfg_path)
    if args.device is not None:
        cfg.device = args.device
    if args.out_dir is not None:
        cfg.out_dir = args.out_dir
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be at least 1, got {args.threads}")
        cfg.threads = args.threads
    if args.write_pack is not None:
        from .train.config import write_config_pack

        out = write_config_pack(cfg, args.write_pack)
        size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
        print(f"geot2e: tile pack written to {out} ({size / 1e6:.1f} MB); train from it with 'pack: {out}'")
        return EXIT_OK
    if args.nproc is not None:
        if args.nproc < 1:
            raise UsageError(f"--nproc must be at least 1, got {args.nproc}")
        cfg.world_size = args.nproc
    if args.no_resume and int(getattr(cfg, "world_size", 1) or 1) > 1:
        raise UsageError("--no-resume is not supported with several processes; delete the run folder instead")
    if args.stage and int(getattr(cfg, "world_size", 1) or 1) > 1:
        raise UsageError("--stage is not supported with several processes")
    run_training(cfg, progress=not args.no_progress, resume=not args.no_resume, stages=args.stage)
    final = Path(cfg.out_dir) / "final"
    if args.stage:
        from .train.schema import stage_finished

        left = [s for s in args.stage if not stage_finished(Path(cfg.out_dir) / s, getattr(cfg, s))]
        if left:
            print(f"geot2e: stage(s) {', '.join(left)} stopped before finishing; rerun the same command to "
                  f"resume (checkpoints in {cfg.out_dir})")
        elif getattr(cfg, "modality", None) and cfg.lora is not None and cfg.export and "detail" in args.stage:
            from .models.modality import modality_from_spec

            where = Path(cfg.export) / modality_from_spec(cfg.modality).folder / "detail"
            print(f"geot2e: the {modality_from_spec(cfg.modality).name!r} pixel-detail network written to {where}")
        else:
            print(f"geot2e: stage(s) {', '.join(args.stage)} finished; run 'geot2e train {args.config}' "
                  "(without --stage) to finish any other stages and export the model")
    elif getattr(cfg, "modality", None) and cfg.lora is not None:
        from .train.schema import stage_finished

        from .models.modality import modality_from_spec

        mod = modality_from_spec(cfg.modality)
        adapter = Path(cfg.out_dir) / "lora" / "adapter"
        if stage_finished(Path(cfg.out_dir) / "lora", cfg.denoiser) and adapter.is_dir():
            where = (Path(cfg.export) / mod.folder) if cfg.export else adapter
            print(f"geot2e: modality adapter {mod.name!r} written to {where}")
            if cfg.export:
                print(f"geot2e: use it with geot2e.generate(..., model={str(cfg.export)!r}, modality={mod.name!r})")
        else:
            print(f"geot2e: training stopped before the adapter finished; rerun the same command to resume "
                  f"(checkpoints in {cfg.out_dir})")
    elif (final / "config.json").is_file():
        print(f"geot2e: model written to {final}" + (f" and exported to {cfg.export}" if cfg.export else ""))
        print(f"geot2e: use it with --model {final}  (or geot2e.load_model({str(final)!r}))")
    else:
        print(f"geot2e: training stopped before the last stage finished; rerun the same command to "
              f"resume (checkpoints in {cfg.out_dir})")
    return EXIT_OK


SMALL_EVAL = ["--only", "cloud", "--n-crops", "4", "--steps", "10"]


def cmd_eval(args, extra: Sequence[str] = ()) -> int:
    from .eval.protocol import main as protocol

    argv = ["--model", args.model, "--device", args.device]
    if args.json:
        argv += ["--json", args.json]
    if args.small:
        argv += SMALL_EVAL
    argv += list(extra)
    try:
        return int(protocol(argv) or 0)
    except SystemExit as e:  # the protocol's own argparse rejected an option
        if e.code in (0, None):
            return EXIT_OK
        raise UsageError(f"the evaluation protocol rejected the options {' '.join(extra)!r} "
                         "(see 'python -m geot2e.eval.protocol --help')") from None


def cmd_info(args) -> int:
    from .models import load_model
    from .models.card import model_card

    model = load_model(args.model, device="cpu")
    info = model_card(model)
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    p = info["parameters"]

    def m(n: int) -> str:
        return f"{n / 1e6:.2f} M"

    lo, hi = info["gsd_range_m"]
    rows = [
        ("model", info["model_id"]),
        ("checkpoint hash", info["checkpoint_hash"] or "-"),
        ("source", info["source"] or "-"),
        ("bands", f"{len(info['bands'])} ({', '.join(info['bands'])})"),
        ("GSD range", f"{lo:g} - {hi:g} m per pixel (trained on)"),
        ("VAE", f"downsampling factor {info['vae_factor']}, {info['latent_channels']} latent channels "
                f"(tile and overlap must be multiples of {info['vae_factor']})"),
        ("text encoder", ", ".join(f"{k} {v}" for k, v in info["text_encoder"].items() if v is not None) or "-"),
        ("parameters", ", ".join(f"{k} {m(v)}" for k, v in p.items() if k != "total") + f"; total {m(p['total'])}"),
    ]
    if info["weights_bytes"]:
        rows.append(("weights on disk", f"{info['weights_bytes'] / 2**20:.1f} MiB"))
    if info["model_card"]:
        rows.append(("model card", info["model_card"]))
    for sub, what in info.get("beside", {}).items():
        rows.append((f"{sub}/", what))
    from .models.vocabulary import describe, model_vocabulary

    rows.append(("vocabulary", describe(model_vocabulary(model))))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return EXIT_OK


COMMANDS = {
    "remove-clouds": cmd_remove_clouds,
    "inpaint": cmd_inpaint,
    "outpaint": cmd_outpaint,
    "generate": cmd_generate,
    "translate": cmd_translate,
    "train": cmd_train,
    "eval": cmd_eval,
    "info": cmd_info,
}


# --------------------------------------------------------------------------- entry point
@contextlib.contextmanager
def _one_line_warnings(*, debug: bool = False):
    """Print warnings meant for users (UserWarning and geot2e's own) as ``geot2e: warning: <message>``,
    once per message; developer warnings (deprecations, numpy RuntimeWarnings) only with ``--debug``."""
    seen: set[str] = set()
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not debug and not issubclass(category, UserWarning):
            return
        text = _one_line(message)
        if text not in seen:
            seen.add(text)
            print(f"geot2e: warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.showwarning = original


def _is_config_syntax_error(exc: BaseException) -> bool:
    """A YAML/TOML file that does not parse (a config the user typed)."""
    try:
        import yaml

        if isinstance(exc, yaml.YAMLError):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        import tomllib

        return isinstance(exc, tomllib.TOMLDecodeError)
    except ImportError:  # pragma: no cover - Python < 3.11
        return False


def _exit_code(exc: BaseException) -> int:
    from .errors import CheckpointError, Geot2eError

    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if _is_config_syntax_error(exc):
        return EXIT_INPUT
    if isinstance(exc, CheckpointError):
        return EXIT_MODEL
    if isinstance(exc, (Geot2eError, _InputError)):
        return EXIT_INPUT
    if isinstance(exc, OSError):  # missing/unreadable files (rasterio, pyogrio, ...)
        return EXIT_INPUT
    if isinstance(exc, _Terminated):
        return EXIT_TERMINATED
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_ERROR


def _message(exc: BaseException, code: int) -> str:
    text = _one_line(exc) or type(exc).__name__
    if code == EXIT_INTERRUPTED:
        return "interrupted"
    if code == EXIT_TERMINATED:
        return "terminated (SIGTERM); no output was written"
    if code == EXIT_ERROR:
        hint = " (out of memory: process lazily with --chunks 1024)" if isinstance(exc, MemoryError) else ""
        return (f"unexpected {type(exc).__name__}: {text}{hint}; rerun with --debug for the traceback "
                "and report it")
    if _is_config_syntax_error(exc):
        return f"the config file does not parse ({text}); fix its syntax (YAML or TOML)"
    # the library speaks Python; say the same in command-line terms
    return text.replace("pass overwrite=True", "pass --overwrite")


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While a command runs, SIGTERM raises :class:`_Terminated` in the main thread, so the same
    cleanup runs as for Ctrl-C (temporaries removed, nothing half-written left)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``geot2e`` command line; returns the exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    with _sigterm_as_interrupt():
        return _main(argv, debug)


def _main(argv: list, debug: bool) -> int:
    try:
        parser = build_parser()
        try:
            args, extra = parser.parse_known_args(argv)
        except SystemExit as e:  # --help / --version
            return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        if extra and args.command != "eval":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        with _one_line_warnings(debug=debug):
            if args.command == "eval":
                return cmd_eval(args, extra)
            return COMMANDS[args.command](args)
    except BaseException as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
        if isinstance(exc, SystemExit):
            raise
        code = _exit_code(exc)
        if debug:
            traceback.print_exc()
        print(f"geot2e: error: {_message(exc, code)}", file=sys.stderr)
        return code


def entry(argv: Sequence[str] | None = None) -> None:
    """The ``geot2e`` executable: :func:`main`, then exit with its code.

    After Ctrl-C or SIGTERM the process ends at once (``os._exit``) once :func:`main` has cleaned
    up: the interrupt is raised wherever the main thread happened to be, possibly inside a
    dask/thread-pool lock that a worker thread then waits on, and the interpreter's normal exit
    joins those threads, so it could hang forever after the cleanup and the error line. Outputs and
    temporaries are already removed at that point; only the thread joins are skipped.
    """
    code = main(argv)
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
