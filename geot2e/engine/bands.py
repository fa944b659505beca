"""Multi-band rasters: the model fills its own bands, the spectral head the raster's others.

The engine hands every tile window to ``model.inpaint`` with all the raster's bands. For a
raster with more bands than the model (say blue, green, red, nir, swir1, swir2 for an RGB
model), :func:`band_model_ref` wraps the model so that its ``inpaint`` runs the diffusion
model on the model's bands (in the model's order) and fills the other bands of the same
window with :func:`geot2e.geo.spectral.fill_from_guide`, fitted on the window's known pixels.
Windows come from the engine's fixed tile grid, so the result is the same for any chunking.
"""
from __future__ import annotations

import numpy as np

from .tiles import ModelRef

__all__ = ["band_model_ref", "BandModel"]


class BandModel:
    """A model seen through a band selection: ``inpaint`` takes and returns all the raster's
    bands; every other attribute is the wrapped model's."""

    def __init__(self, model, model_bands):
        self._inner = model
        self._idx = [int(i) for i in model_bands]

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def inpaint(self, x, m, **kw):
        import torch

        from ..geo.spectral import fill_from_guide

        idx = self._idx
        out = self._inner.inpaint(x[:, idx].contiguous(), m, **kw)
        xs = x.detach().to("cpu", torch.float64).numpy()
        unknown = m.detach().to("cpu").numpy()[:, 0] > 0.5
        fill = out.detach().to("cpu", torch.float64).numpy()
        rest = [c for c in range(xs.shape[1]) if c not in idx]
        full = np.empty(xs.shape, dtype=np.float32)
        full[:, idx] = fill
        # the samples of one window share its known pixels: one fit per distinct window
        n = xs.shape[0]
        start = 0
        while start < n:
            stop = start + 1
            while stop < n and np.array_equal(unknown[stop], unknown[start]) and np.array_equal(
                    xs[stop, rest][:, ~unknown[start]], xs[start, rest][:, ~unknown[start]]):
                stop += 1
            known = ~unknown[start]
            guide = np.where(known, xs[start:stop, idx], fill[start:stop])
            full[start:stop, rest] = np.clip(fill_from_guide(xs[start, rest], known, guide), -1.0, 1.0)
            start = stop
        return torch.from_numpy(full).to(out.device, out.dtype)


class _BandRef(ModelRef):
    """A picklable :class:`ModelRef` whose model is wrapped in :class:`BandModel` (workers load
    the checkpoint and wrap it again)."""

    def __init__(self, model, device: str, model_bands):
        super().__init__(model, device)
        self.model_bands = tuple(int(i) for i in model_bands)
        self._wrapped = None

    def get(self):
        if self._wrapped is None:
            self._wrapped = BandModel(super().get(), self.model_bands)
        return self._wrapped

    def __getstate__(self):
        state = super().__getstate__()
        state["_wrapped"] = None
        return state

    def __repr__(self) -> str:
        return f"_BandRef({self.path!r}, device={self.device!r}, model_bands={self.model_bands})"


def band_model_ref(model, device: str, model_bands=None) -> ModelRef:
    """The engine's reference to ``model``: plain, or (``model_bands``: the raster band of each
    model band) wrapped so that the raster's other bands are filled by the spectral head."""
    if model_bands is None:
        return ModelRef(model, device)
    return _BandRef(model, device, model_bands)
