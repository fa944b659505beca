"""Public functions: remove clouds, inpaint, outpaint and generate georeferenced rasters.

Each function validates its inputs, turns the mask into a boolean raster on the input's
grid, and hands over to :mod:`geot2e.engine`, which runs the model tile by tile (see
``docs/engine.md``). A dask-backed input gives a lazy dask-backed result; a numpy-backed
input gives a computed result (with a progress bar).

Shared keyword-only options
---------------------------
Their defaults are those of the table :mod:`geot2e.sampling` (:func:`geot2e.sampling.options`);
measurements behind them, for the current default model, are in ``docs/model_card.md``.

model : str, path or Text2Earth, default "{default_model}"
    The embedded model, a checkpoint folder, or a loaded model.
guidance : float, default {default_guidance} (remove_clouds: by ``samples``, see below)
    Classifier-free guidance ω (0 = no guidance, one UNet pass per step).
guidance_interval : float, default {default_guidance_interval} ({clouds_guidance_interval} for remove_clouds)
    Share of the denoising steps, noisiest first, that use guidance; the rest run unguided
    (one UNet pass each). Guidance in the last, low-noise steps mostly smooths pixel-scale
    detail, so remove_clouds guides only the noisiest steps (measured: model card, "Guidance
    interval"). It acts only where guidance does: in remove_clouds by default the mean of K.
steps : int, optional (remove_clouds: by ``samples``, see below)
    Denoising steps; default: the model's ({model_steps} for geot2e's models; official Text2Earth
    models their pipelines' own).
seed : int, default {default_seed}
    Seed of the tile noise: the same seed gives the same result for any chunking.
samples : int, default {default_samples}
    K samples per tile with independent noise. K > 1 returns their per-pixel mean and
    an ``uncertainty`` coordinate (same dims as the data, float32, the per-pixel
    standard deviation across the K samples in the input's units, 0 where not
    synthesized). With a model's pixel-detail network (``detail/``, the default's) one
    sample carries the pixel grain of the ground around it, and K > 1 averages the K
    samples' expected images without it (the grain's mean is zero).

    remove_clouds picks its sampler by what the result is for when ``guidance`` and
    ``steps`` are left as None (:data:`CLOUD_SAMPLERS`). One sample is for realism:
    ω = {one_guidance}, {one_steps} steps, keeping more of the pixel-scale texture of real ground.
    The mean of K is for accuracy: ω = {k_guidance} on the noisiest steps, {k_steps} steps, closer to
    the truth per pixel (measured: model card, "Measured on held-out data"). Explicit values
    always win.
tile, overlap : int, default {default_tile}, {default_overlap}
    Tile cell size and halo width in pixels (multiples of the model's VAE factor).
gsd : float, optional
    Ground sample distance (metres) given to the model instead of ``geot2e.gsd(da)``.
device : str, default "{default_device}"
    Torch device ("cuda", "cpu", ...).
progress : bool, optional
    Show a progress bar (default: for numpy-backed inputs).
scheduler : str, default "{default_scheduler}"
    "auto" (the model's: "{model_scheduler}"; an official Text2Earth folder's own scheduler), or
    one of {schedulers}.
harmonize : bool or str, default "{default_harmonize}" (``"{clouds_harmonize}"`` for remove_clouds)
    "auto": "{model_harmonize}" for geot2e's models, False for official Text2Earth models (their
    pipelines do not harmonise; known pixels are still composited back bit for bit).
    How the fill's colour is made to agree with the known pixels. True / ``"boundary"``:
    the colour mismatch on the known ring around the mask is spread inward (keeps a
    prompt's new colours). ``"lowpass"``: the fill's coarse colour and brightness (scales
    above ~2 px) come from the membrane (harmonic) fill of the known pixels and only the
    finer detail from the model — right for reconstruction, hence remove_clouds' default
    (measured: model card, "Colour anchor"). False / ``"none"``: the decoder's output as it
    is.
radiometry : geot2e.geo.Radiometry, optional
    Value scaling to use instead of fitting one on the valid unmasked pixels.
threads : int, optional
    Torch CPU threads each tile runs with, wherever it runs (main thread, dask worker
    thread or ``dask.distributed`` worker). Default: the calling thread's
    ``torch.get_num_threads()``. CPU kernels split their reductions by thread count, so
    the result is bit-identical across chunkings and schedulers for the same ``threads``;
    with several dask workers on one machine, ``threads=1`` avoids oversubscription.
few_step : bool, default {default_few_step} (inpaint); None for remove_clouds
    Sample with the model's few-step student (``<model>/few_step``, trained by the distill
    stage of ``geot2e train``): unguided, its own number of steps (8 for the default model),
    one UNet pass each, instead of the full sampler. ``steps`` and ``guidance`` still win when
    given. True raises :class:`~geot2e.errors.CheckpointError` when the model has no student.
    remove_clouds' None: the student when the model has one and ``guidance`` and ``steps``
    are left as None (the default model has one: the same held-out scores as the full
    sampler in a fifth of the time; measured: model card, "Few-step sampler"), else the
    full sampler; ``few_step=False`` is the full sampler. "Has one": a model name or folder
    with ``few_step/``, or an object from ``load_model(..., few_step=True)``; an object loaded
    without it is the teacher and keeps the full sampler (pass the name to get the default).
modality : str, optional (inpaint, remove_clouds, outpaint, generate)
    Generate another kind of image than RGB with the model's adapter for it
    (:data:`geot2e.models.modality.MODALITIES`: ``"nir"``, ``"pan"``, ``"cir"`` = NIR, red,
    green; trained by ``geot2e train configs/modality_<name>.yaml``): the raster holds that
    modality's bands (a NIR or PAN band, on its own grid), and ``generate`` returns them. None
    or ``"rgb"``: the base model. Not combined with ``few_step`` (the student is RGB's).
    ``generate`` also takes a composite modality, ``"rgbn"`` (red, green, blue, NIR): the base
    model and the ``nir`` adapter sampled from the same noise, so both draw one layout (NDVI
    from text; docs/modalities.md). To fill an RGB + NIR raster, leave ``modality`` unset:
    every band is filled (``bands``).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import warnings
from typing import Any, Sequence

import numpy as np
import xarray as xr

from .errors import (BandCountError, DimensionError, EmptyRasterError, GSDRangeWarning, MissingCRSError,
                     ParameterError, PromptTruncatedWarning, TileSizeError)
from .sampling import CLOUD_SAMPLERS, OPTIONS, SCHEDULER_CHOICES, cloud_sampler, fill_doc, options

__doc__ = fill_doc(__doc__)

__all__ = ["remove_clouds", "inpaint", "outpaint", "generate", "translate", "process_zarr", "cloud_sampler",
           "CLOUD_SAMPLERS"]

#: Upper bounds of the size-like options, checked before a model is loaded or an array is built.
MAX_STEPS = 1000               # the models' training timesteps: more steps only repeat timesteps
MAX_SAMPLES = 64               # the K samples of a tile run as one batch
MAX_OUTPAINT_PIXELS = 65_536   # pixels added on one side
MAX_EAGER_PIXELS = 50_000_000  # height x width of a numpy-backed (in-memory) outpaint canvas
MAX_TILE = 4096                # tile cell size in pixels (the UNet's memory grows with its square)

#: defaults of the shared options (the table: geot2e.sampling): inpaint, outpaint and generate; remove_clouds
_O, _RC, _TR = options("inpaint"), options("remove_clouds"), options("translate")


# --------------------------------------------------------------------------- validation
def resolve_few_step(model, few_step, guidance=None, steps=None, modality=None) -> bool:
    """remove_clouds' ``few_step=None``: True when ``model`` has a few-step student (a folder,
    or ``"default"``, with ``few_step/``; a model loaded with ``few_step=True``) and
    ``guidance``, ``steps`` and ``modality`` are left as None; an explicit value as it is."""
    if few_step is not None:
        return few_step
    if guidance is not None or steps is not None or modality not in (None, "rgb"):
        return False
    from .models import Text2Earth
    from .models.checkpoint import has_few_step

    if isinstance(model, Text2Earth):
        return getattr(model, "student_steps", None) is not None
    return isinstance(model, (str, os.PathLike)) and has_few_step(model)


def _check_options(model, *, guidance, steps, seed, samples, tile, overlap, gsd, device, progress,
                   scheduler, harmonize, threads=None, guidance_interval=1.0, few_step=False, translate=False,
                   modality=None):
    from .engine.raster import Options
    from .models import Text2Earth, load_model

    if not isinstance(guidance, numbers.Real) or not math.isfinite(guidance) or guidance < 0:
        raise ParameterError(f"guidance must be a finite number >= 0, got {guidance!r}.")
    if (isinstance(guidance_interval, bool) or not isinstance(guidance_interval, numbers.Real)
            or not 0 <= guidance_interval <= 1):
        raise ParameterError(f"guidance_interval must be a number in [0, 1] (the share of the steps, noisiest "
                             f"first, that use guidance), got {guidance_interval!r}.")
    for name, v, lo in (("steps", 1 if steps is None else steps, 1), ("samples", samples, 1), ("seed", seed, 0)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
            raise ParameterError(f"{name} must be an integer >= {lo}, got {v!r}.")
    _check_upper_bounds(steps=steps, samples=samples, tile=tile, overlap=overlap)
    _check_device(device)
    if scheduler not in SCHEDULER_CHOICES:
        raise ParameterError(f"unknown scheduler {scheduler!r}; choose one of {SCHEDULER_CHOICES}.")
    if gsd is not None and (not isinstance(gsd, numbers.Real) or not math.isfinite(gsd) or gsd <= 0):
        raise ParameterError(f"gsd must be a positive number of metres per pixel, got {gsd!r}.")
    from .models.fill import harmonize_mode

    harmonize_mode(True if harmonize == "auto" else harmonize)  # validated before loading a model
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, numbers.Integral)
                                or threads < 1):
        raise ParameterError(f"threads must be an integer >= 1 (torch CPU threads per tile) or None, got {threads!r}.")
    if threads is not None and threads > max(64, 4 * (os.cpu_count() or 1)):
        from .errors import SizeLimitError

        raise SizeLimitError(f"threads={threads} is far more than this machine's {os.cpu_count()} CPUs (each thread "
                             f"takes a stack; at most {max(64, 4 * (os.cpu_count() or 1))}): use threads=None (torch's "
                             "count) or at most the number of cores.")
    if not isinstance(few_step, bool):
        raise ParameterError(f"few_step must be True or False, got {few_step!r}.")
    if modality is not None:
        from .models.checkpoint import resolve_modality

        # ParameterError naming the registered ones; a user's modality is found from the folder's adapter
        modality = resolve_modality(modality, model if isinstance(model, (str, os.PathLike)) else "default")
        from .models.modality import get_modality

        if get_modality(modality).composite:
            raise ParameterError(f"modality={modality!r} is generated by geot2e.generate (its parts "
                                 f"{', '.join(get_modality(modality).parts)} from the same noise); to fill a raster "
                                 "that holds those bands, leave modality unset: every band is filled (bands=[...] "
                                 "names them; CLI: --bands).")
        if modality == "rgb":
            modality = None
        elif few_step:
            raise ParameterError(f"few_step=True with modality={modality!r}: the few-step student is the RGB "
                                 "model's; leave few_step unset (or False) for a modality.")
    if isinstance(model, Text2Earth):
        if modality is not None and getattr(model, "modality", None) != modality:
            raise ParameterError(f"modality={modality!r} needs the model's name or folder (load_model(..., "
                                 f"modality={modality!r}) merges its adapter), or a model loaded that way.")
        if few_step and getattr(model, "student_steps", None) is None:
            raise ParameterError("few_step=True needs the model's name or folder (load_model(..., few_step=True) "
                                 "merges its student), or a model loaded that way; this model has no student.")
        if translate and getattr(model, "controlnet", None) is None:
            raise ParameterError("translate needs a model with its translation ControlNet: pass the model's name "
                                 "or folder, or load_model(..., translate=True).")
        m = model
    else:
        m = load_model(model, device=device, few_step=few_step, translate=translate, modality=modality)
    _check_finite_weights(m)
    from .models.defaults import resolve_sampling  # None/"auto": the model's own (official: 50 steps, folder's)

    steps, scheduler, harmonize = resolve_sampling(m, steps=steps, scheduler=scheduler, harmonize=harmonize)
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    f = m.vae_factor
    for name, v, lo in (("tile", tile, f), ("overlap", overlap, 0)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo or v % f:
            raise TileSizeError(f"{name}={v!r} must be a multiple of the model's VAE factor ({f}) and at "
                                f"least {lo}, e.g. tile=256, overlap=32.")
    opts = Options(guidance=float(guidance), guidance_interval=float(guidance_interval), steps=int(steps),
                   seed=int(seed), samples=int(samples), tile=int(tile), overlap=int(overlap), scheduler=scheduler,
                   harmonize=harmonize,
                   progress=progress, threads=int(threads))
    return m, opts


def _check_upper_bounds(*, steps, samples, tile, overlap) -> None:
    """Size-like options have upper bounds; the message gives the memory a value would need."""
    from .errors import SizeLimitError

    if steps is not None and steps > MAX_STEPS:
        raise SizeLimitError(f"steps={steps} is more than {MAX_STEPS}, the number of timesteps the model was "
                             "trained on (more steps only repeat timesteps and cost time); 25-60 steps are "
                             f"typical: use at most steps={MAX_STEPS}.")
    ints = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (tile, overlap))
    if ints and tile > MAX_TILE:
        gib = (tile + 2 * overlap) ** 2 * 4 * 4 * 2 / 2**30
        raise SizeLimitError(f"tile={tile} is more than {MAX_TILE} pixels (one window would need more than "
                             f"{gib:.3g} GiB before the network's activations); tiles of 256-1024 pixels cover "
                             "rasters of any size: the tile grid is independent of the raster's size.")
    if ints and overlap > tile:
        raise SizeLimitError(f"overlap={overlap} is more than tile={tile}: the halo around each tile cell may not "
                             "exceed the cell (e.g. tile=256, overlap=32).")
    if samples > MAX_SAMPLES:
        ok = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (tile, overlap))
        window = int(tile) + 2 * int(overlap) if ok else 320
        # the K images of one window, guided and unguided, as float32; activations come on top
        gib = samples * 2 * 4 * window * window * 4 / 2**30
        raise SizeLimitError(f"samples={samples} is more than {MAX_SAMPLES}: the samples of a tile run as one "
                             f"batch, needing more than {gib:.3g} GiB for {window} x {window} windows. Use "
                             f"samples <= {MAX_SAMPLES}; for more, run several calls with different seeds and "
                             "average their results.")


def _check_outpaint_canvas(da, pads) -> None:
    """A numpy-backed outpaint builds its grown canvas in memory: bound it before allocating."""
    from .engine.raster import raster_dims
    from .errors import SizeLimitError

    if hasattr(da.data, "dask"):
        return  # lazy: the canvas is padded chunk by chunk
    _, _, ydim, xdim = raster_dims(da)
    h = int(da.sizes[ydim]) + int(pads["top"]) + int(pads["bottom"])
    w = int(da.sizes[xdim]) + int(pads["left"]) + int(pads["right"])
    if h * w > MAX_EAGER_PIXELS:
        nbytes = h * w * (da.size // max(1, da.sizes[ydim] * da.sizes[xdim])) * da.dtype.itemsize
        raise SizeLimitError(f"the grown raster would be {h} x {w} pixels ({nbytes / 2**30:.3g} GiB per copy, "
                             f"several copies in memory; the in-memory limit is {MAX_EAGER_PIXELS:,} pixels): "
                             "pass a dask-backed raster (da.chunk({'y': 1024, 'x': 1024}), or "
                             "geot2e.io.open_raster(path, chunks=1024)) and write the result with "
                             "geot2e.io.to_cog or to Zarr, or add fewer pixels per call.")


def _check_device(device) -> None:
    """``device=``: a torch device string this machine has (a typo or a missing GPU is a
    :class:`~geot2e.errors.DeviceError` before any model is loaded)."""
    import torch

    from .errors import DeviceError

    if isinstance(device, torch.device) or (isinstance(device, str) and device == "auto"):
        return
    hint = "use device='auto' (the best available), 'cpu', 'cuda', 'cuda:1' or 'mps'"
    if not isinstance(device, str):
        raise DeviceError(f"device must be a string, got {type(device).__name__}; {hint}.")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise DeviceError(f"device={device!r} is not a torch device; {hint}.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device={device!r} but CUDA is not available on this machine (no GPU, or a torch "
                              "built without CUDA); use device='cpu' or device='auto'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device={device!r} but this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1}).")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"device={device!r} but MPS (Apple GPU) is not available here; use device='cpu' or "
                              "device='auto'.")
    elif dev.type != "cpu":
        raise DeviceError(f"device={device!r} is not supported; {hint}.")


def _check_finite_weights(model) -> None:
    """Weights holding NaN or infinity (a diverged training run, a broken conversion) would fill every
    tile with NaN: refuse them, once per loaded model, with a :class:`~geot2e.errors.CheckpointError`."""
    if getattr(model, "_geot2e_finite_checked", False):
        return
    import torch

    from .errors import CheckpointError

    bad = total = 0
    with torch.no_grad():
        for param in model.parameters():
            total += 1
            if param.is_floating_point() and not bool(torch.isfinite(param).all()):
                bad += 1
    if bad:
        src = getattr(model, "source", None) or getattr(model, "model_id", "the model")
        raise CheckpointError(f"{src}: {bad} of {total} weight tensors hold NaN or infinite values (a diverged "
                              "training run or a broken conversion); use another checkpoint, e.g. an earlier "
                              "one of the run, or 'default'.")
    try:
        model._geot2e_finite_checked = True
    except AttributeError:  # pragma: no cover - checked on every call then
        pass


def _check_radiometry(radiometry, model, da=None) -> None:
    """``radiometry=``: a :class:`geot2e.geo.Radiometry` with one (lo, hi) per model band (or one
    for all)."""
    if radiometry is None:
        return
    from .geo import Radiometry

    if not isinstance(radiometry, Radiometry):
        raise ParameterError(f"radiometry must be a geot2e.geo.Radiometry (e.g. Radiometry.fit(da), or "
                             f"Radiometry(lo=[...], hi=[...], dtype='uint16')), got {type(radiometry).__name__}.")
    nb = model.bands
    if da is not None:
        from .engine.raster import raster_dims

        band = raster_dims(da)[1]
        nb = int(da.sizes[band]) if band else 1
    if len(radiometry.lo) not in (1, nb):
        raise BandCountError(f"radiometry has {len(radiometry.lo)} band(s) but the raster has {nb} (the model: "
                             f"{', '.join(model.config.band_names)}); give one lo/hi per band, or one for all.")


def _check_raster(da, model, bands=None) -> tuple[tuple[str, ...] | None, tuple[int, ...] | None]:
    """The raster is a DataArray with usable dims whose bands the model can fill. Returns
    ``(roles, model_bands)``: the role of every band (None when neither ``bands=`` nor the
    raster names them) and the raster band of each model band (None: the raster's bands are
    the model's, in its order, as before band roles existed)."""
    from .engine.raster import raster_dims

    if not isinstance(da, xr.DataArray):
        raise DimensionError(f"expected an xarray.DataArray (e.g. from rioxarray.open_rasterio), got "
                             f"{type(da).__name__}; wrap arrays with xarray and write a CRS with .rio.write_crs.")
    if da.ndim < 2:
        raise DimensionError(f"expected (band, y, x) or (y, x) dims, got {da.dims}.")
    if any(s == 0 for s in da.shape):
        raise EmptyRasterError(f"the raster has a zero-sized dimension {dict(da.sizes)}; crop a non-empty area.")
    _check_dims(da)
    _, band, _, _ = raster_dims(da)
    nb = int(da.sizes[band]) if band else 1
    return _band_plan(da, model, nb, band, bands)


def _band_plan(da, model, nb: int, band, bands):
    """Band roles (:mod:`geot2e.geo.bands`) -> which raster band feeds each model band; the
    raster's other bands are filled by the spectral head (:mod:`geot2e.geo.spectral`)."""
    from .errors import BandRoleError
    from .geo.bands import band_roles, role_of
    from .geo.spectral import FILLABLE

    model_names = list(model.config.band_names)
    count_hint = ("select and order the bands, e.g. da.sel(band=[...]) or geot2e.io.open_raster(path, bands=[...]) "
                  "(CLI: --bands)")
    try:
        roles = band_roles(da, bands, band_dim=band)
    except BandRoleError:
        if bands is not None or nb != model.bands:
            raise
        roles = None  # descriptions that are no roles on a raster of the model's band count: as before
    model_roles = [role_of(n) for n in model_names]
    modality = getattr(model, "modality", None) not in (None, "rgb") and model.modality

    def modality_error(found: str) -> BandCountError:
        return BandCountError(f"the raster has {found} but modality {modality!r} fills {', '.join(model_names)} "
                              "alone: pass those bands (e.g. da.sel(band=[...]) or geot2e.io.open_raster(path, "
                              "bands=[...]); CLI: --bands), or leave modality unset for an RGB or multi-band raster.")

    if roles is None:
        if nb != model.bands and modality:
            raise modality_error(f"{nb} band(s)")
        if nb != model.bands:
            raise BandCountError(
                f"the raster has {nb} band(s) but the model expects {model.bands} ({', '.join(model_names)}, in "
                f"this order); {count_hint}, or load a model trained for {nb} band(s). A raster with more bands "
                f"(e.g. nir, swir1) is filled band by band when its bands are named: bands=('blue', 'green', "
                "'red', 'nir', ...) (CLI: --bands blue green red nir), or band descriptions (long_name).")
        return None, None
    if None in model_roles:  # a model whose bands are no roles (b1, b2, ...): positional only
        if nb != model.bands:
            raise BandCountError(f"the raster has {nb} band(s) but the model expects {model.bands} "
                                 f"({', '.join(model_names)}); {count_hint}.")
        return roles, None
    missing = [r for r in model_roles if r not in roles]
    if modality and (missing or len(roles) != len(model_roles)):
        raise modality_error(f"bands {', '.join(roles)}")
    if missing:
        raise BandCountError(
            f"the raster's bands are {', '.join(roles)} but the model needs {', '.join(model_roles)} (it fills "
            f"these with the diffusion model, and other bands from them); it lacks {', '.join(missing)}: "
            f"{count_hint}, or name the bands correctly with bands=(...).")
    extra = [r for r in roles if r not in model_roles]
    refused = [r for r in extra if r not in FILLABLE]
    if refused:
        raise BandRoleError(
            f"the raster has band(s) {refused} that geot2e cannot fill: the spectral head predicts reflective "
            f"bands ({', '.join(FILLABLE)}) from the visible ones, not thermal or panchromatic bands (another "
            "grid); drop them, e.g. da.drop_sel(band=[...]) or da.isel(band=[...]), and fill them separately.")
    if list(roles) == model_roles:
        return tuple(roles), None
    return tuple(roles), tuple(roles.index(r) for r in model_roles)


_Y_NAMES = ("y", "latitude", "lat", "northing")
_X_NAMES = ("x", "longitude", "lon", "easting")


def _check_dims(da) -> None:
    """Spatial dims must be identifiable, and with several non-spatial dims one must be 'band'."""
    try:
        ydim, xdim = da.rio.y_dim, da.rio.x_dim
    except Exception:  # rioxarray found no spatial dims: accept the names geot2e.geo knows
        names = {str(d).lower(): d for d in da.dims}
        ydim = next((names[n] for n in _Y_NAMES if n in names), None)
        xdim = next((names[n] for n in _X_NAMES if n in names), None)
    if ydim is None or xdim is None:
        raise DimensionError(f"cannot find the spatial dims among {da.dims}; name them 'y' and 'x' "
                             "(da.rename({...})) or call da.rio.set_spatial_dims(x_dim=..., y_dim=...).")
    others = [d for d in da.dims if d not in (ydim, xdim)]
    if len(others) > 1 and "band" not in others:
        raise DimensionError(f"the raster has dims {da.dims}: with more than one non-spatial dim, the band dim "
                             f"must be named 'band' (the others are processed slice by slice), e.g. "
                             f"da.rename({{{str(others[-1])!r}: 'band'}}).")


def _warn_unknown_words(model, prompts) -> None:
    """Warn once per prompt whose words the model never saw in its training captions
    (:mod:`geot2e.models.vocabulary`; models without a recorded vocabulary are never warned about)."""
    from .models.vocabulary import check_model_prompts

    check_model_prompts(model, [p for p in prompts if p], stacklevel=5)


def _warn_long_prompts(model, prompts, data) -> None:
    """Warn at call time for a lazy input (its tiles run later, perhaps on workers whose warnings
    the user never sees); numpy inputs warn while their tiles run."""
    if not hasattr(data, "dask"):
        return
    enc = getattr(model, "text_encoder", None)
    tok, ctx = getattr(enc, "tokenizer", None), getattr(enc, "context_length", None)
    if tok is None or ctx is None:
        return
    for p in ([prompts] if isinstance(prompts, str) else list(prompts)):
        n = len(tok.encode(p)) + 2
        if n > ctx:
            warnings.warn(f"prompt of {n} tokens truncated to the text encoder's context of {ctx} tokens: "
                          f"{p[:60]!r}...", PromptTruncatedWarning, stacklevel=3)


#: A GSD within this share of the trained range's ends counts as inside it: the range is recorded
#: as ground distances of the training rasters (a projection's scale factor makes a nominal 15 m
#: Landsat PAN pixel 15.006 m on the ground), and users pass nominal values.
GSD_RANGE_SLACK = 0.02


def _gsd_for(da, gsd, model) -> float:
    from .geo import gsd as measure_gsd

    if gsd is None:
        try:
            gsd = float(measure_gsd(da))
        except MissingCRSError as e:
            raise MissingCRSError(f"{e} (the model is conditioned on the ground sample distance)") from e
    lo, hi = model.gsd_range
    if not lo / (1 + GSD_RANGE_SLACK) <= gsd <= hi * (1 + GSD_RANGE_SLACK):
        warnings.warn(f"the GSD {gsd:.3g} m lies outside the range the model was trained on "
                      f"({lo:g}-{hi:g} m); results may be poor. Resample the raster, or pass gsd= to "
                      "override what the model is told.", GSDRangeWarning, stacklevel=3)
    return float(gsd)


def _mask_runs(mask, da, prompt, prompt_column: str | None = None) -> tuple[list[tuple[xr.DataArray, str]], Any]:
    """``[(bool mask DataArray, prompt), ...]`` and the prompt(s) to record."""
    from .engine.raster import raster_dims
    from .geo import assert_same_grid, geometry_mask, prompt_map, read_vector

    leading, _, ydim, xdim = raster_dims(da)
    if not isinstance(prompt, str):
        raise ParameterError(f"prompt must be a string (or the name of a column of the mask's "
                             f"GeoDataFrame), got {type(prompt).__name__}.")
    if prompt_column is not None and not (isinstance(mask, (str, os.PathLike)) or _is_vector(mask)):
        raise ParameterError(f"prompt_column={prompt_column!r} needs geometries with that column as the mask "
                             "(a GeoDataFrame or a vector file), not a raster mask.")
    if isinstance(mask, xr.DataArray):
        if not _same_pixels_without_crs(mask, da, ydim, xdim):
            assert_same_grid(mask, da)
        extra = [d for d in mask.dims if d not in (ydim, xdim)]
        if any(d not in leading for d in extra):
            raise DimensionError(f"the mask has dims {mask.dims}; give a (y, x) mask, or (time, y, x) with "
                                 f"leading dims of the raster ({leading}).")
        m = mask.transpose(*extra, ydim, xdim)
        if m.dtype != bool:
            m = m.copy(data=_binary_mask(m.data))
        return [(m, prompt)], prompt
    if isinstance(mask, np.ndarray):
        if mask.shape != (da.sizes[ydim], da.sizes[xdim]):
            raise DimensionError(f"a numpy mask must have the raster's (y, x) shape "
                                 f"{(da.sizes[ydim], da.sizes[xdim])}, got {mask.shape}.")
        m = xr.DataArray(_binary_mask(mask), dims=(ydim, xdim))
        return [(m, prompt)], prompt
    if isinstance(mask, (str, os.PathLike)) or _is_vector(mask):
        gdf = read_vector(mask)
        if prompt_column is not None:
            if prompt_column not in gdf.columns or prompt_column == gdf.geometry.name:
                raise ParameterError(f"prompt_column={prompt_column!r} is not a column of the mask's geometries; "
                                     f"its columns: {[c for c in gdf.columns if c != gdf.geometry.name]}.")
            prompt = prompt_column
        elif prompt and prompt in gdf.columns and prompt != gdf.geometry.name:
            warnings.warn(f"prompt={prompt!r} names a column of the mask's geometries and is read as a prompt "
                          f"map; say so with prompt_column={prompt!r} (prompt= as a column name will be removed).",
                          DeprecationWarning, stacklevel=5)
        if prompt and prompt in gdf.columns and prompt != gdf.geometry.name:
            labels, prompts = prompt_map(gdf, prompt, da)
            runs = [(labels == k + 1, p) for k, p in enumerate(prompts)]
            return [(r.drop_vars([c for c in r.coords if c not in (ydim, xdim)]), p) for r, p in runs], prompts
        _check_not_a_column(prompt, gdf)
        m = geometry_mask(gdf, like=da)
        return [(m, prompt)], prompt
    raise ParameterError(f"cannot use a {type(mask).__name__} as a mask; give a bool DataArray on the raster's "
                         "grid, geometries (GeoDataFrame, GeoSeries, shapely) or a vector file path.")


def _binary_mask(values):
    """The one rule for non-bool masks (numpy or DataArray, numpy- or dask-backed alike):
    nonzero = synthesize. NaN is a :class:`MaskValueError` (is a NaN pixel to be synthesized or
    not? say it with ``fillna``); values other than 0 and 1 warn (:class:`MaskValueWarning`)
    and count as True. A dask mask is summarised eagerly for this check (one small reduction)."""
    from .errors import MaskValueError, MaskValueWarning

    dtype = np.dtype(values.dtype)
    if dtype == bool:
        return values
    if dtype.kind not in "iuf":
        raise ParameterError(f"a mask must be bool or numeric (0 = keep, 1 = synthesize), got dtype {dtype}.")
    lazy = hasattr(values, "dask")
    arr = values if lazy else np.asarray(values)
    nan = arr != arr if dtype.kind == "f" else None
    other = (arr != 0) & (arr != 1)
    if nan is not None:
        other = other & ~nan
    counts = [other.sum()] + ([nan.sum()] if nan is not None else [])
    if lazy:
        import dask

        counts = list(dask.compute(*counts))
    n_other, n_nan = int(counts[0]), int(counts[1]) if nan is not None else 0
    if n_nan:
        raise MaskValueError(
            f"the mask holds {n_nan} NaN value(s): whether those pixels are to be synthesized is ambiguous. "
            "Decide explicitly, e.g. mask.fillna(0) (keep them) or mask.fillna(1) (synthesize them), or pass a "
            "bool mask.")
    if n_other:
        warnings.warn(f"the mask holds {n_other} value(s) other than 0 and 1; they count as True (nonzero = "
                      "synthesize). Pass a bool mask (e.g. mask > 0.5) to say what you mean.",
                      MaskValueWarning, stacklevel=4)
    return arr != 0


def _check_not_a_column(prompt: str, gdf) -> None:
    """A prompt that nearly names a column of the GeoDataFrame is a typo, not a text."""
    import difflib

    cols = [str(c) for c in gdf.columns if c != gdf.geometry.name]
    if not prompt or not cols or any(ch.isspace() for ch in prompt):
        return
    near = [c for c in cols if c.lower() == prompt.lower()] or difflib.get_close_matches(prompt, cols, n=1,
                                                                                         cutoff=0.8)
    if near:
        raise ParameterError(f"prompt {prompt!r} is not a column of the mask's GeoDataFrame (columns: {cols}); "
                             f"did you mean prompt={near[0]!r}? To fill every polygon with the text {prompt!r} "
                             "itself, pass the geometries only (gdf.geometry) as the mask.")


def _same_pixels_without_crs(mask: xr.DataArray, da: xr.DataArray, ydim: str, xdim: str) -> bool:
    """A mask without a CRS (e.g. computed from values, or built from a numpy array) is on
    ``da``'s grid when it has the same (y, x) size and, if it has y/x coordinates, the same ones."""
    if mask.rio.crs is not None or ydim not in mask.dims or xdim not in mask.dims:
        return False
    if (mask.sizes[ydim], mask.sizes[xdim]) != (da.sizes[ydim], da.sizes[xdim]):
        return False
    for d in (ydim, xdim):
        if d in mask.coords and d in da.coords:
            a, b = np.asarray(mask[d].values, float), np.asarray(da[d].values, float)
            step = abs(b[1] - b[0]) if b.size > 1 else 1.0
            if not np.allclose(a, b, rtol=0, atol=1e-6 * step):
                return False
    return True


def _is_vector(obj) -> bool:
    try:
        import shapely
        import geopandas as gpd
    except ImportError:  # pragma: no cover
        return False
    if isinstance(obj, (gpd.GeoDataFrame, gpd.GeoSeries, shapely.Geometry, dict)) or hasattr(obj, "__geo_interface__"):
        return True
    return isinstance(obj, (list, tuple)) and all(isinstance(g, shapely.Geometry) for g in obj)


def _strip_spatial_coords(da: xr.DataArray) -> xr.DataArray:
    """Drop coords a previous run attached (synthesized, uncertainty) so results stay clean."""
    drop = [c for c in ("synthesized", "uncertainty") if c in da.coords]
    return da.drop_vars(drop) if drop else da


def _previous_steps(da: xr.DataArray):
    """What earlier geot2e calls left on ``da``: ``(da without them, synthesized map or None,
    provenance of every earlier step, oldest first)``. ``da`` itself is not changed."""
    from .io.provenance import provenance_from_attrs

    prior = da.coords["synthesized"] if "synthesized" in da.coords else None
    prov = provenance_from_attrs(da.attrs)
    history = [dict(h) for h in (prov.pop("geot2e_history", None) or []) if isinstance(h, dict)]
    if prov.get("geot2e_operation") and (not history or history[-1] != prov):
        history.append(prov)
    clean = _strip_spatial_coords(da).copy(deep=False)
    clean.attrs = {k: v for k, v in da.attrs.items() if not str(k).startswith("geot2e_")}
    return clean, prior, history


def _chain(result: xr.DataArray, prior, history: list, pads: dict | None = None) -> xr.DataArray:
    """Accumulate across chained calls: a pixel synthesized by an earlier call stays marked
    ``synthesized``, and ``attrs["geot2e_history"]`` lists the provenance of every step (the
    latest last; the latest step's keys also stay at the top level)."""
    if prior is not None:
        syn = result["synthesized"]
        data = prior.astype(bool).data
        if pads:  # outpaint: the earlier map sits inside the grown canvas
            pad = ((pads["top"], pads["bottom"]), (pads["left"], pads["right"]))
            if hasattr(data, "dask"):
                import dask.array as dsa

                data = dsa.pad(data, pad, mode="constant", constant_values=False)
            else:
                data = np.pad(np.asarray(data), pad, mode="constant", constant_values=False)
        prev = xr.DataArray(data, dims=prior.dims)
        merged = syn.variable | prev.variable
        result = result.assign_coords(synthesized=(merged.dims, merged.data, dict(syn.attrs)))
        result = result.transpose(*result.dims)
    if history:
        from .io.provenance import provenance_from_attrs

        result.attrs["geot2e_history"] = [*history, provenance_from_attrs(result.attrs)]
    return result


# --------------------------------------------------------------------------- shared steps
def _shared(local_vars: dict) -> dict[str, Any]:
    """The shared options (:data:`geot2e.sampling.OPTIONS`) among a public function's arguments."""
    return {k: local_vars[k] for k in OPTIONS if k in local_vars}


def _prepare(da, *, radiometry, bands=None, **options):
    """The first steps of every function that edits a raster: options checked and the model
    loaded (:func:`_check_options`), the raster, its band roles (``bands=``) and ``radiometry``
    checked against the model, and what earlier geot2e calls left on ``da`` split off
    (:func:`_previous_steps`). Returns ``(model, engine options, clean da, prior synthesized
    map, history, band attrs)``; the engine options say which raster band feeds each model band."""
    import dataclasses

    m, opts = _check_options(**options)
    roles, model_bands = _check_raster(da, m, bands)
    _check_radiometry(radiometry, m, da)
    band_attrs = {}
    if model_bands is not None:
        from .geo.spectral import HEAD_ID

        opts = dataclasses.replace(opts, model_bands=model_bands)
        band_attrs = {"band_roles": list(roles), "spectral_head": HEAD_ID}
    return (m, opts, *_previous_steps(da), band_attrs)


def _edit(operation: str, da, mask, prompt, *, radiometry, gsd, allow_empty: bool = False,
          prompt_column: str | None = None, bands=None, **options):
    """inpaint and remove_clouds: prepare, put the mask (and a prompt map) on the grid, run the
    engine and chain the result's provenance onto the input's."""
    from .engine.raster import synthesize

    m, opts, da, prior, history, band_attrs = _prepare(da, radiometry=radiometry, gsd=gsd, bands=bands, **options)
    g = _gsd_for(da, gsd, m)
    runs, prompt_attr = _mask_runs(mask, da, prompt, prompt_column)
    _warn_long_prompts(m, [p for _, p in runs], da.data)
    _warn_unknown_words(m, [p for _, p in runs])
    return _chain(synthesize(da, runs, model=m, gsd=g, opts=opts, operation=operation, radiometry=radiometry,
                             allow_empty=allow_empty, prompt_attr=prompt_attr, extra_attrs=band_attrs or None),
                  prior, history)


# --------------------------------------------------------------------------- public functions
def inpaint(da: xr.DataArray, mask, prompt: str = "", *, prompt_column: str | None = None,
            bands: Sequence[str] | None = None, model=_O["model"], guidance: float = _O["guidance"],
            guidance_interval: float = _O["guidance_interval"], steps: int | None = _O["steps"],
            seed: int = _O["seed"], samples: int = _O["samples"], tile: int = _O["tile"],
            overlap: int = _O["overlap"], gsd: float | None = _O["gsd"], device: str = _O["device"],
            progress: bool | None = _O["progress"], scheduler: str = _O["scheduler"],
            harmonize: bool | str = _O["harmonize"], radiometry=_O["radiometry"],
            threads: int | None = _O["threads"], few_step: bool = _O["few_step"],
            modality: str | None = _O["modality"]) -> xr.DataArray:
    """Synthesize the pixels under ``mask`` from the text ``prompt``.

    Parameters
    ----------
    da : xarray.DataArray
        Raster (band, y, x) or (y, x) — or (time, band, y, x), processed slice by slice —
        numpy- or dask-backed, any dtype, with a CRS. Bands with roles (``bands``), or
        unnamed in the model's order (``model.config.band_names``).
    mask : bool DataArray, geometries or vector file path
        True = synthesize. A DataArray must be on ``da``'s grid (GridMismatchError
        otherwise); geometries in any CRS are rasterized with
        :func:`geot2e.geometry_mask` (all touched pixels). A numeric mask, numpy array
        or DataArray alike, follows one rule: nonzero = synthesize; NaN raises
        :class:`~geot2e.errors.MaskValueError` (decide with ``mask.fillna(0)`` or
        ``fillna(1)``); values other than 0 and 1 warn
        (:class:`~geot2e.errors.MaskValueWarning`) and count as True.
    prompt : str
        Text for the masked area. Words the model never saw in its training captions warn
        (:class:`~geot2e.errors.VocabularyWarning`, naming the words it knows).
    prompt_column : str, optional
        The name of a column of the GeoDataFrame (or vector file) given as ``mask``: each
        polygon is filled with its own prompt (a prompt map; one run per distinct prompt,
        each run seeing the previous runs' pixels as context). ``prompt="<column>"`` still
        works for a column name, with a ``DeprecationWarning``.
    bands : sequence of str, optional
        The role of each band of ``da``, in its order: roles (``"red"``, ``"nir"``, ``"swir1"``),
        STAC common names or sensor band names (``"B08"``, ``"SR_B5"``), see
        :mod:`geot2e.geo.bands`. Default: the raster's band descriptions (``long_name``) or
        band names. The model fills its own bands (``model.config.band_names``); the raster's
        other reflective bands (nir, swir, red edge...) are filled from them by the spectral
        head (:mod:`geot2e.geo.spectral`, fitted per tile on the clear pixels); the result keeps
        ``da``'s band order. Unknown or repeated roles raise
        :class:`~geot2e.errors.BandRoleError`, a count other than the raster's
        :class:`~geot2e.errors.BandCountError` (docs/multiband.md).
    **options
        See the module docstring (model, guidance, steps, seed, samples, tile, overlap,
        gsd, device, progress, scheduler, harmonize, radiometry, threads, few_step).

    Returns
    -------
    xarray.DataArray
        Same CRS, transform, dims, coords, dtype, nodata and attrs as ``da``; pixels
        outside the mask bit-identical to ``da``; a ``synthesized`` bool (y, x)
        coordinate; ``geot2e_*`` provenance attrs; an ``uncertainty`` coordinate when
        ``samples > 1``. Chained calls accumulate: pixels an earlier call synthesized
        (the input's own ``synthesized`` coordinate, also after a COG or Zarr round trip)
        stay marked, and ``attrs["geot2e_history"]`` lists the provenance of every step.

    Raises
    ------
    GridMismatchError, EmptyMaskError, BandCountError, BandRoleError, TileSizeError, MissingCRSError,
    ParameterError

    Warns
    -----
    GSDRangeWarning
        The raster's GSD is outside the model's training range.
    """
    return _edit("inpaint", da, mask, prompt, prompt_column=prompt_column, bands=bands, **_shared(locals()))


def remove_clouds(da: xr.DataArray, mask, *, prompt: str = "", bands: Sequence[str] | None = None,
                  model=_RC["model"],
                  guidance: float | None = _RC["guidance"], guidance_interval: float = _RC["guidance_interval"],
                  steps: int | None = _RC["steps"], seed: int = _RC["seed"], samples: int = _RC["samples"],
                  tile: int = _RC["tile"], overlap: int = _RC["overlap"], gsd: float | None = _RC["gsd"],
                  device: str = _RC["device"], progress: bool | None = _RC["progress"],
                  scheduler: str = _RC["scheduler"], harmonize: bool | str = _RC["harmonize"],
                  radiometry=_RC["radiometry"], threads: int | None = _RC["threads"],
                  few_step: bool | None = _RC["few_step"], modality: str | None = _RC["modality"]) -> xr.DataArray:
    """Replace cloudy pixels by plausible cloud-free ground.

    Same machinery as :func:`inpaint`; ``mask`` (True = cloud or shadow) typically comes
    from :func:`geot2e.cloud_mask`. The default prompt is empty (the null text: "the
    ground as it looks around the gap"). Unlike :func:`inpaint`, an empty mask (a
    cloud-free scene) is not an error: the result is an unchanged copy.

    Parameters and returns as in :func:`inpaint`, except the sampler's defaults
    (:func:`geot2e.sampling.options`): ``guidance`` and ``steps`` left as None follow
    ``samples`` (:func:`cloud_sampler`): one sample for realism, the mean of K samples for
    accuracy; guidance on the noisiest steps only and ``harmonize="lowpass"``.
    """
    few_step = resolve_few_step(model, few_step, guidance, steps, modality)
    guidance, steps = cloud_sampler(samples, guidance, steps, few_step)
    return _edit("remove_clouds", da, mask, prompt, allow_empty=True, bands=bands, **_shared(locals()))


def outpaint(da: xr.DataArray, *, left: int = 0, right: int = 0, top: int = 0, bottom: int = 0,
             prompt: str = "", bands: Sequence[str] | None = None, model=_O["model"], guidance: float = _O["guidance"],
             guidance_interval: float = _O["guidance_interval"], steps: int | None = _O["steps"],
             seed: int = _O["seed"], samples: int = _O["samples"], tile: int = _O["tile"],
             overlap: int = _O["overlap"], gsd: float | None = _O["gsd"], device: str = _O["device"],
             progress: bool | None = _O["progress"], scheduler: str = _O["scheduler"],
             harmonize: bool | str = _O["harmonize"], radiometry=_O["radiometry"],
             threads: int | None = _O["threads"], modality: str | None = _O["modality"]) -> xr.DataArray:
    """Extend a raster beyond its edges by ``left``/``right``/``top``/``bottom`` pixels.

    The canvas keeps the CRS and pixel size; the original pixels keep their coordinates
    and values (bit-identical); the new pixels are synthesized from ``prompt`` with the
    original as context. Repeated calls with a new prompt each build an unbounded scene.
    ``bands`` as in :func:`inpaint`: a multi-band raster grows in every band.

    Returns
    -------
    xarray.DataArray
        The grown raster; ``synthesized`` marks the new area. Dask input gives a dask
        result (new chunks appended at the edges).
    """
    from .engine.canvas import grow_canvas
    from .engine.raster import synthesize

    pads = dict(left=left, right=right, top=top, bottom=bottom)
    for k, v in pads.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ParameterError(f"{k} must be a whole number of pixels >= 0, got {v!r}.")
        if v > MAX_OUTPAINT_PIXELS:
            from .errors import SizeLimitError

            raise SizeLimitError(f"{k}={v} pixels is more than {MAX_OUTPAINT_PIXELS:,} on one side; grow the scene in "
                                 "steps (each outpaint call adds a ring), or generate the far area with "
                                 "geot2e.generate(bounds=..., crs=..., gsd=...) on a dask-backed template.")
    if not any(pads.values()):
        raise ParameterError("outpaint needs at least one of left, right, top, bottom > 0 (pixels to add).")
    m, opts, da, prior, history, band_attrs = _prepare(da, bands=bands, **_shared(locals()))
    if not isinstance(prompt, str):
        raise ParameterError(f"prompt must be a string, got {type(prompt).__name__}.")
    g = _gsd_for(da, gsd, m)
    _warn_long_prompts(m, prompt, da.data)
    _warn_unknown_words(m, [prompt])
    _check_outpaint_canvas(da, pads)
    canvas, mask = grow_canvas(da, **{k: int(v) for k, v in pads.items()})
    result = synthesize(canvas, [(mask, prompt)], model=m, gsd=g, opts=opts, operation="outpaint",
                        radiometry=radiometry, prompt_attr=prompt,
                        extra_attrs={"outpaint_pixels": [int(left), int(right), int(top), int(bottom)], **band_attrs})
    return _chain(result, prior, history, pads={k: int(v) for k, v in pads.items()})


def generate(prompt: str, *, like: xr.DataArray | None = None, bounds=None, crs=None, gsd: float | None = None,
             shape: tuple[int, int] | None = None, model=_O["model"], guidance: float = _O["guidance"],
             guidance_interval: float = _O["guidance_interval"], steps: int | None = _O["steps"],
             seed: int = _O["seed"], samples: int = _O["samples"], tile: int = _O["tile"],
             overlap: int = _O["overlap"], device: str = _O["device"], progress: bool | None = _O["progress"],
             scheduler: str = _O["scheduler"], harmonize: bool | str = _O["harmonize"],
             radiometry=_O["radiometry"], threads: int | None = _O["threads"],
             modality: str | None = _O["modality"]) -> xr.DataArray:
    """Generate a new georeferenced scene from text.

    Parameters
    ----------
    prompt : str
        What the scene shows.
    like : xarray.DataArray, optional
        Take the grid (shape, transform, CRS, chunks), band coordinate, dtype and nodata
        from this raster; its valid pixels set the value scaling of the output.
    bounds : (left, bottom, right, top), optional
        Extent in ``crs`` units (with ``crs`` and ``gsd`` or ``shape``).
    crs : CRS-like, optional
    gsd : float, optional
        Ground sample distance in metres per pixel, and what the model is told. With
        ``bounds``: the pixel size in CRS units is chosen so that ``geot2e.gsd`` of the
        result is exactly ``gsd`` along each axis (measured on the ground at the grid's
        centre, so in UTM it differs from ``gsd`` by the projection's scale factor); the
        grid starts at the top-left corner of ``bounds`` and has as many whole pixels as
        needed to cover them: it overshoots ``right`` and ``bottom`` by less than one pixel,
        never falls short. With ``like``, overrides the GSD the model is told.
    shape : (height, width), optional
        Pixel size of the canvas (with ``bounds``, instead of ``gsd``).

    Returns
    -------
    xarray.DataArray
        (band, y, x). With ``like``: like's dtype and value range. Otherwise float32 in
        [0, 1] (the model's range mapped linearly), band coordinate = the model's band
        names. All pixels are marked ``synthesized``.
    """
    from .engine.canvas import blank_canvas
    from .engine.raster import synthesize

    if not isinstance(prompt, str):
        raise ParameterError(f"prompt must be a string, got {type(prompt).__name__}.")
    shared = _shared(locals())
    comp = _composite(modality, model)
    if comp is not None:
        return _generate_composite(prompt, comp, like=like, bounds=bounds, crs=crs, shape=shape, **shared)
    shared.pop("radiometry")
    m, opts = _check_options(**shared)
    _check_radiometry(radiometry, m)
    canvas, mask, rad = blank_canvas(m, like=like, bounds=bounds, crs=crs, gsd=gsd, shape=shape)
    if radiometry is not None:
        rad = radiometry
    g = _gsd_for(canvas, gsd if like is not None else None, m)
    _warn_long_prompts(m, prompt, canvas.data)
    _warn_unknown_words(m, [prompt])
    return synthesize(canvas, [(mask, prompt)], model=m, gsd=g, opts=opts, operation="generate",
                      radiometry=rad, prompt_attr=prompt)


def _composite(modality, model):
    """The composite :class:`~geot2e.models.modality.Modality` named ``modality`` (None for any other)."""
    if modality is None or not isinstance(modality, str):
        return None
    from .models.modality import MODALITIES

    m = MODALITIES.get(modality)
    if m is None or not m.composite:
        return None
    from .models import Text2Earth

    if isinstance(model, Text2Earth):
        raise ParameterError(f"modality={modality!r} runs one model per part ({', '.join(m.parts)}): pass the "
                             "model's name or folder (e.g. model='default'), not a loaded model.")
    return m


def _generate_composite(prompt, comp, *, like, modality, radiometry, **kw) -> xr.DataArray:
    """:func:`generate` of the composite modality ``comp``: each part generated with its own model from the
    same seed (the engine keys the noise by tile and sample, not by model), stacked along the
    band dimension (in ``like``'s band order where given), with both parts' provenance."""
    from .engine.raster import raster_dims
    from .geo.bands import band_roles

    if radiometry is not None:
        raise ParameterError(f"radiometry with modality={modality!r}: give like= (a raster holding its bands "
                             f"{', '.join(comp.bands)}) to set the value scaling of each part.")
    order = None
    if like is not None:
        if not isinstance(like, xr.DataArray):
            raise ParameterError(f"like must be a DataArray (a raster to copy the grid from), got {type(like).__name__}.")
        _, band, _, _ = raster_dims(like)
        if band is None:
            raise BandCountError(f"modality={modality!r} makes {len(comp.bands)} bands ({', '.join(comp.bands)}) "
                                 "but like is a single-band (y, x) raster; give a like with those bands.")
        roles = band_roles(like, band_dim=band)
        if roles is None and int(like.sizes[band]) == len(comp.bands):   # unnamed: the modality's order
            like, roles = like.assign_attrs(long_name=tuple(comp.bands)), tuple(comp.bands)
        if roles is None or not set(comp.bands) <= set(roles):
            raise BandCountError(f"modality={modality!r} makes bands {', '.join(comp.bands)}, but like's bands are "
                                 f"{'unnamed' if roles is None else ', '.join(roles)} ({int(like.sizes[band])}); "
                                 "name them (like.assign_attrs(long_name=(...))) or give a like that holds them.")
        pos = {r: i for i, r in enumerate(roles)}
        order = np.argsort([pos[b] for b in comp.bands], kind="stable")   # parts' order -> like's
    parts = [generate(prompt, like=like, modality=part, radiometry=None, **kw) for part in comp.parts]
    bdim = parts[0].dims[-3]
    out = xr.concat(parts, dim=bdim, coords="different", compat="equals", combine_attrs="override")
    names = tuple(n for p in parts for n in p.attrs.get("long_name", ()))   # like's names of the bands, or roles
    if len(names) != len(comp.bands):
        names = tuple(comp.bands)
    rad = [p.attrs.get("geot2e_radiometry") for p in parts]
    if order is not None:
        out = out.isel({bdim: order})
        names = tuple(names[i] for i in order)
    else:
        out = out.assign_coords({bdim: np.arange(1, len(names) + 1)})
    attrs = dict(out.attrs, long_name=names, geot2e_modality=comp.name,
                 geot2e_model_id="; ".join(str(p.attrs.get("geot2e_model_id")) for p in parts),
                 geot2e_checkpoint_hash="; ".join(str(p.attrs.get("geot2e_checkpoint_hash")) for p in parts))
    if all(isinstance(r, dict) and "lo" in r and "hi" in r for r in rad):
        lo = [v for r in rad for v in r["lo"]]
        hi = [v for r in rad for v in r["hi"]]
        if order is not None:
            lo, hi = [lo[i] for i in order], [hi[i] for i in order]
        attrs["geot2e_radiometry"] = dict(rad[0], lo=lo, hi=hi)
    return out.assign_attrs(attrs)


def translate(da: xr.DataArray, task: str, *, control: xr.DataArray | None = None, scale: int | None = None,
              prompt: str = "", model=_TR["model"], guidance: float = _TR["guidance"],
              guidance_interval: float = _TR["guidance_interval"], steps: int | None = _TR["steps"],
              seed: int = _TR["seed"], samples: int = _TR["samples"], tile: int = _TR["tile"],
              overlap: int = _TR["overlap"], gsd: float | None = _TR["gsd"], device: str = _TR["device"],
              progress: bool | None = _TR["progress"], scheduler: str = _TR["scheduler"],
              radiometry=_TR["radiometry"], threads: int | None = _TR["threads"],
              strength: float | None = None) -> xr.DataArray:
    """Translate a raster: pan-sharpening, super-resolution, NIR → RGB or dehazing.

    Parameters
    ----------
    da : xarray.DataArray
        The input, (band, y, x) or (y, x), numpy- or dask-backed, with a CRS:
        ``"super_resolution"``, ``"dehaze"``: the RGB raster; ``"pansharpen"``: the
        multispectral RGB raster (its coarser grid); ``"nir_to_rgb"``: the NIR band (or a
        raster with a band labelled ``"nir"``). Bands labelled red/green/blue are picked by
        name, else three bands are taken as red, green, blue.
    task : {"pansharpen", "super_resolution", "nir_to_rgb", "dehaze"}
    control : xarray.DataArray, optional
        ``"pansharpen"`` only: the panchromatic band on its own finer grid, which must be an
        integer refinement of ``da``'s (:func:`geot2e.geo.refine.refinement_of`); the result
        lies on the PAN grid over the two rasters' common extent.
    scale : int, optional
        ``"super_resolution"``: 2 or 4 (required). ``"pansharpen"``: read from the grids
        (an explicit value must match). Not used by the other tasks.
    prompt : str
        Optional text (the default is the null text: the model follows the input alone).
    strength : float, optional
        Where sampling starts, in (0, 1]: from the input (bicubic for the resolution tasks, the
        hazy image for ``"dehaze"``) noised to this share of the steps (SDEdit); 1 starts from
        pure noise. Default: the task's (:data:`geot2e.models.control.STRENGTH`, measured);
        ``"nir_to_rgb"`` always starts from noise (there is no RGB to start from). Not used by
        ``"dehaze"`` with a model that has a dehazing network (the default has one): it inverts
        the atmospheric scattering model ``I = J·t + A·(1 − t)`` with the network's transmission
        and airlight fields (:mod:`geot2e.models.haze`), deterministically, every detail the
        input's; pass the clear scene's scaling as ``radiometry=`` (e.g.
        ``geot2e.geo.Radiometry.fit(clear_scene)``) when the raster is hazy all over, since its
        own percentiles cannot tell a uniform haze from the ground's contrast. Not used by
        ``"super_resolution"`` with a model that has a super-resolution network (the default
        has one): a sample is that network's expected fine image plus pixel noise scaled by
        its predicted spread (:mod:`geot2e.models.sr`), so the mean of K samples tends to the
        expected image and ``uncertainty`` shows where the fine detail is unknown.
    **options
        As :func:`geot2e.inpaint` (model, guidance, guidance_interval, steps, seed, samples,
        tile, overlap, gsd, device, progress, scheduler, radiometry, threads); translation
        samples unguided (``guidance=0``) by default. ``gsd`` is the output's (default: the
        output grid's own). ``radiometry`` scales ``da``'s bands (default: fitted on them);
        the result is in ``da``'s units (for ``"nir_to_rgb"``: the NIR band's scaling).

    Returns
    -------
    xarray.DataArray
        (band, y, x) with bands red, green, blue in ``da``'s dtype and CRS: on a grid
        exactly ``scale`` times finer with the same bounds (``"super_resolution"``: the
        transform's pixel size divided by ``scale``), on the PAN grid (``"pansharpen"``), on
        ``da``'s grid otherwise; ``geot2e_*`` provenance attrs (``geot2e_operation`` =
        ``"translate"``, ``geot2e_task``, ``geot2e_scale``) and an ``uncertainty``
        coordinate when ``samples > 1``. Every pixel is synthesized; the resolution tasks
        keep the input exactly at its own resolution up to the back-projection's residual
        (the result area-averaged to the input grid is the input, within a fraction of a
        digital number after 3 iterations).

    Raises
    ------
    ParameterError (unknown task, bad scale, a control where none is used),
    GridMismatchError (a PAN grid that does not refine ``da``'s, or no overlap),
    BandCountError, MissingCRSError, CheckpointError (a model without a translation ControlNet).
    """
    from .engine.raster import synthesize
    from .translation import check_request, finish, full_mask, prepare

    from .models.control import resolve_strength

    check_request(task, da, control, scale, strength)
    _check_dims(da)
    m, opts = _check_options(model, guidance=guidance, steps=steps, seed=seed, samples=samples, tile=tile,
                             overlap=overlap, gsd=gsd, device=device, progress=progress, scheduler=scheduler,
                             harmonize="none", threads=threads, guidance_interval=guidance_interval, translate=True)
    prep = prepare(da, task, control=control, scale=scale, radiometry=radiometry)
    g = _gsd_for(prep.guide, gsd, m)               # the output grid's
    opts = dataclasses.replace(opts, task=task, scale=prep.scale, control_bands=prep.control_bands,
                               strength=None if strength is None else float(strength))
    res = synthesize(prep.work, [(full_mask(prep.work), str(prompt or ""))], model=m, gsd=g, opts=opts,
                     operation="translate", radiometry=prep.radiometry,
                     extra_attrs={"task": task, "scale": prep.scale, "strength": resolve_strength(task, strength, m)})
    return finish(res, da, prep)


def process_zarr(src_store, dst_store, mask, prompt: str = "", *, operation: str = "inpaint",
                 overwrite: bool = False, scheduler=None, **options) -> "os.PathLike":
    """Process a Zarr mosaic into another Zarr store, block by block, resumably.

    Parameters
    ----------
    src_store : path or xarray.DataArray
        A store written by :mod:`geot2e.io` (e.g. :func:`geot2e.io.build_zarr_mosaic`), or
        a dask-backed raster; its (y, x) chunks are the unit of writing and resumption.
    dst_store : path
        Output store; if it exists on the same grid, finished blocks (its done-ledger)
        are skipped, so an interrupted run resumes where it stopped.
    mask, prompt
        As in :func:`inpaint`.
    operation : {"inpaint", "remove_clouds"}
    overwrite : bool
        Replace an existing ``dst_store`` instead of resuming it.
    scheduler : optional
        dask scheduler for the computation (default: current scheduler/client).
    **options
        Shared options (see the module docstring). ``samples > 1``: the uncertainty is
        not stored.

    Returns
    -------
    pathlib.Path
        The output store (open it with :func:`geot2e.io.open_zarr`).
    """
    from .engine.zarr import write_to_zarr
    from .io import open_zarr

    funcs = {"inpaint": inpaint, "remove_clouds": remove_clouds}
    if operation not in funcs:
        raise ParameterError(f"operation must be one of {sorted(funcs)}, got {operation!r}.")
    if not isinstance(src_store, xr.DataArray):
        _check_complete_source(src_store)
    src = src_store if isinstance(src_store, xr.DataArray) else open_zarr(src_store, check_complete=False)
    if not hasattr(src.data, "dask"):
        src = src.chunk({"y": 512, "x": 512})
    _check_zarr_destination(dst_store, src, overwrite=overwrite)
    kw = dict(options)
    kw.setdefault("progress", False)
    if operation == "inpaint":
        result = inpaint(src, mask, prompt, **kw)
    else:
        result = remove_clouds(src, mask, prompt=prompt, **kw)
    return write_to_zarr(result, dst_store, overwrite=overwrite, scheduler=scheduler)


def _check_complete_source(src_store) -> None:
    """An unfinished store (its ledger lists only some blocks) is refused as input: its missing
    blocks would be read as nodata and processed as if they were data."""
    from pathlib import Path

    from .errors import IncompleteStoreError
    from .io.zarr_store import incomplete_message, store_progress

    p = Path(os.fspath(src_store)).expanduser()
    progress = store_progress(p)
    if progress is not None and progress[0] < progress[1]:
        raise IncompleteStoreError(incomplete_message(p, progress) + " It cannot be used as input until then.")


def _check_zarr_destination(dst_store, src, *, overwrite: bool) -> None:
    """Before any work: the output store must be creatable, or resumable on ``src``'s grid."""
    from pathlib import Path

    from .io import check_zarr_matches
    from .io._paths import check_output_path
    from .io.zarr_store import store_exists

    dst = Path(os.fspath(dst_store)).expanduser()
    if not overwrite and store_exists(dst):
        check_zarr_matches(dst, src)  # ZarrStoreMismatchError: another grid, CRS, dtype or bands
    else:
        check_output_path(dst, overwrite=overwrite, kind="store")
