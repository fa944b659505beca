"""Ways to fill the masked pixels of a crop, side by side: geot2e and classical baselines.

Every fill takes the crop's values ``(band, y, x)`` and a bool mask ``(y, x)`` (True =
fill) and returns float64 values in the crop's units with the known pixels copied back
exactly, so methods differ only under the mask. Masked input values are never read.
"""
from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

__all__ = ["mean_fill", "harmonic_fill", "biharmonic_fill", "telea_fill", "vae_reconstruction", "geot2e_fill",
           "engine_available"]


def _composite(fill: np.ndarray, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64).copy()
    out[:, mask] = np.asarray(fill, dtype=np.float64)[:, mask]
    return out


def mean_fill(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-band mean of the known pixels."""
    v = np.asarray(values, dtype=np.float64)
    means = v[:, ~mask].mean(axis=1)
    return _composite(np.broadcast_to(means[:, None, None], v.shape), v, mask)


def harmonic_fill(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The membrane (Laplace) fill: each masked pixel the mean of its four neighbours, the
    known pixels as the boundary (:func:`geot2e.geo.spectral.harmonic_fill`, all bands)."""
    from ..geo.spectral import harmonic_fill as _harmonic

    v = np.asarray(values, dtype=np.float64)
    return _composite(_harmonic(v, ~np.asarray(mask, bool)), v, mask)


def biharmonic_fill(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """:func:`skimage.restoration.inpaint_biharmonic` on all bands (``channel_axis``)."""
    from skimage.restoration import inpaint_biharmonic

    v = np.asarray(values, dtype=np.float64)
    lo, hi = v[:, ~mask].min(axis=1), v[:, ~mask].max(axis=1)
    span = np.where(hi > lo, hi - lo, 1.0)
    x = (v - lo[:, None, None]) / span[:, None, None]
    x[:, mask] = 0.0
    f = inpaint_biharmonic(np.moveaxis(x, 0, -1), mask, channel_axis=-1)
    f = np.moveaxis(f, -1, 0) * span[:, None, None] + lo[:, None, None]
    return _composite(f, v, mask)


def telea_fill(values: np.ndarray, mask: np.ndarray, *, radius: float = 5.0) -> np.ndarray:
    """OpenCV Telea (``cv2.inpaint``, ``INPAINT_TELEA``) band by band, through
    :func:`geot2e.models.fill.telea_fill` (each band's known range mapped to 0–1000 first:
    OpenCV's float Telea overshoots on unit-scale data such as reflectances)."""
    import torch

    from ..models.fill import telea_fill as _telea

    v = np.asarray(values, dtype=np.float64)
    x = torch.from_numpy(v[None].astype(np.float32))
    known = torch.from_numpy((~np.asarray(mask, bool))[None, None].astype(np.float32))
    out = _telea(x, known, radius=radius)[0].numpy().astype(np.float64)
    return _composite(out, v, mask)


def _radiometry(values: np.ndarray, mask: np.ndarray, nodata=0):
    from ..geo import Radiometry

    return Radiometry.fit(values, valid=~mask, nodata=nodata)


def vae_reconstruction(model, values: np.ndarray, mask: np.ndarray, *, nodata=0) -> np.ndarray:
    """The model's VAE applied to the *true* crop (an upper bound on a fill's fidelity)."""
    import torch

    rad = _radiometry(values, mask, nodata)
    x = np.clip(rad.to_model(np.asarray(values)), -1, 1)
    with torch.no_grad():
        xt = torch.from_numpy(x)[None].to(model.device)
        rec = model.decode_latents(model.encode_images(xt)).float().clamp(-1, 1)[0].cpu().numpy()
    return _composite(rad.from_model(rec, dtype=np.float64), values, mask)


def engine_available() -> bool:
    """True when the public ``geot2e.remove_clouds`` (engine) can be imported."""
    try:
        from ..api import remove_clouds  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means: use the direct fallback
        return False
    return True


def geot2e_fill(model, crop: xr.DataArray, mask: np.ndarray, *, samples: int = 1, steps: int | None = None,
                guidance: float | None = None, seed: int = 0, prompt: str = "", use_engine: bool | None = None,
                few_step: bool = False) -> tuple[np.ndarray, str]:
    """Fill with geot2e: one sample, or the per-pixel mean of ``samples`` samples.

    Goes through the public :func:`geot2e.remove_clouds` (one tile covering the crop,
    known pixels composited back by the engine) when it is available; otherwise calls
    ``model.inpaint`` directly on the crop scaled by the known pixels' robust range, and
    composites the known pixels back (labelled ``"direct model.inpaint"``).

    Both routes sample as remove_clouds does (:func:`geot2e.sampling.options`): ``steps`` and
    ``guidance`` left as None take its defaults for ``samples``
    (:func:`geot2e.sampling.cloud_sampler`), and its guidance interval, colour harmonisation
    and the model's own scheduler apply. ``few_step``: the model's few-step student
    (``model`` loaded with ``load_model(..., few_step=True)``), unguided, in its own steps.

    Returns
    -------
    (values, route) : float64 (band, y, x) in the crop's units, and which route was used.
    """
    from ..sampling import cloud_sampler

    guidance, steps = cloud_sampler(samples, guidance, steps, few_step)
    values = np.asarray(crop.values)
    h, w = values.shape[-2:]
    if use_engine is None:
        use_engine = engine_available()
    if use_engine:
        from ..api import remove_clouds

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = remove_clouds(crop, np.asarray(mask, bool), model=model, guidance=guidance, steps=steps,
                                seed=seed, samples=samples, tile=max(h, w), overlap=0, progress=False,
                                few_step=few_step)
        return _composite(np.asarray(out.values, dtype=np.float64), values, mask), "geot2e.remove_clouds"
    import torch

    from ..geo import gsd as measure_gsd
    from ..models.defaults import resolve_sampling
    from ..sampling import options

    rc = options("remove_clouds")  # the same sampler as the engine route
    steps, scheduler, harmonize = resolve_sampling(model, steps=steps, scheduler=rc["scheduler"],
                                                   harmonize=rc["harmonize"])
    rad = _radiometry(values, mask, crop.rio.nodata)
    f = model.vae_factor
    ph, pw = (-h) % f, (-w) % f
    x = np.clip(rad.to_model(values), -1, 1)
    m = np.asarray(mask, np.float32)
    if ph or pw:  # pad to the VAE factor by reflection; the padding is synthesized and cropped
        x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="reflect")
        m = np.pad(m, ((0, ph), (0, pw)), mode="constant", constant_values=1)
    xt = torch.from_numpy(np.ascontiguousarray(x))[None].repeat(samples, 1, 1, 1)
    mt = torch.from_numpy(np.ascontiguousarray(m))[None, None].repeat(samples, 1, 1, 1)
    gen = torch.Generator().manual_seed(int(seed))
    out = model.inpaint(xt, mt, gsd=float(measure_gsd(crop)), prompts=prompt, guidance=guidance, steps=steps,
                        scheduler=scheduler, harmonize=harmonize, guidance_interval=rc["guidance_interval"],
                        generator=gen).clamp(-1, 1)[:, :, :h, :w].cpu().numpy()
    fills = np.stack([rad.from_model(o, dtype=np.float64) for o in out])
    return _composite(fills.mean(axis=0), values, mask), "direct model.inpaint"
