"""Spectral head: fill the bands a model does not generate (NIR, SWIR, ...) from those it does.

The RGB diffusion model fills red, green and blue; the other bands of a multi-band raster are
then predicted, pixel by pixel, from the filled visible bands, with a relation fitted on the
window's own clear pixels, and anchored to the surrounding ground:

1. **Spectral fit.** On the known pixels of the window, each extra band is regressed on the
   guide bands (the visible ones) with a ridge regression; the fit is what the ground *in
   this scene* says about how, say, NIR goes with red, green and blue.
2. **Prediction.** Under the mask the regression is applied to the filled guide bands, so the
   extra bands follow the fill's texture and land cover (vegetation stays NIR-bright, water
   NIR-dark: NDVI and NDWI come out as in real ground). The regression's residual on the
   known pixels (what the visible bands do not explain: soil, moisture, a field's crop) is
   interpolated into the mask (harmonic interpolation, Laplace's equation with the known
   residuals as boundary values) and added, so the fill meets the known pixels without a seam.
3. **Weighting.** The prediction is trusted as far as it explains the band's fine detail on
   the known pixels (the least-squares weight of the prediction's high-pass for the band's): a band
   the visible ones do not explain at pixel scale (often SWIR) falls back towards the harmonic
   interpolation of the band itself, and a one-sample fill does not pass on more texture than
   the relation supports.

Pure NumPy/SciPy (no torch); the engine calls :func:`fill_from_guide` on every tile window,
so the result does not depend on dask chunks. Method and measurements: ``docs/multiband.md``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["fill_from_guide", "harmonic_fill", "HEAD_ID", "FILLABLE"]

#: the roles (:data:`geot2e.geo.bands.ROLES`) the head fills: reflected light, on the visible bands' grid
#: (not the thermal bands, which measure emitted heat, nor the panchromatic band, on a finer grid)
FILLABLE = ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "water_vapour",
            "cirrus", "swir1", "swir2")

#: what the provenance records as the spectral head
HEAD_ID = "geot2e.geo.spectral.fill_from_guide: ridge on the visible bands, detail weight, harmonic anchor"
#: pixels the fit uses at most (a fixed-stride subsample of the known pixels)
_MAX_FIT = 20_000
#: fewer known pixels than this: no fit, the extra bands are the harmonic interpolation alone
_MIN_FIT = 64


def _features(guide: np.ndarray, degree: int = 2) -> np.ndarray:
    """(n_features, n) from guide values (G, n): 1, each band, each pairwise product."""
    g = np.asarray(guide, np.float64)
    feats = [np.ones(g.shape[1:]), *g]
    for i in range(g.shape[0] if degree > 1 else 0):
        for j in range(i, g.shape[0]):
            feats.append(g[i] * g[j])
    return np.stack(feats)


def _highpass(x: np.ndarray, known: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    k = known.astype(np.float64)
    den = ndimage.gaussian_filter(k, sigma, mode="nearest")
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        num = ndimage.gaussian_filter(np.where(known, x[b], 0.0), sigma, mode="nearest")
        out[b] = x[b] - num / np.maximum(den, 1e-9)
    return out


def _detail_weight(v: np.ndarray, known: np.ndarray, pred: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Per band, the least-squares weight (clipped to 0..1) of the prediction's fine detail
    (scales below ~``sigma`` px) for the band's fine detail, on the known pixels away from the mask."""
    from scipy import ndimage

    inner = ndimage.binary_erosion(known, iterations=int(2 * sigma) + 1)
    if inner.sum() < 16:
        inner = known
    hv, hp = _highpass(v, known, sigma)[:, inner], _highpass(pred, known, sigma)[:, inner]
    hv = hv - hv.mean(axis=1, keepdims=True)
    hp = hp - hp.mean(axis=1, keepdims=True)
    cov = (hv * hp).sum(axis=1)
    return np.clip(cov / np.maximum((hp ** 2).sum(axis=1), 1e-24), 0.0, 1.0)


def _biharmonic(values, known):
    from skimage.restoration import inpaint_biharmonic

    v = np.where(known, values, 0.0)
    return np.moveaxis(inpaint_biharmonic(np.moveaxis(v, 0, -1), ~known, channel_axis=-1), -1, 0)


def harmonic_fill(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill the unknown pixels of each band by harmonic interpolation of the known ones.

    Solves Laplace's equation on the unknown pixels (4-neighbour stencil, Neumann at the
    array's edges) with the known pixels as boundary values; an unknown region that touches
    no known pixel gets the mean of the known pixels (0 when there is none).

    Parameters
    ----------
    values : (B, h, w) float array; read only where ``known``.
    known : (h, w) bool array.

    Returns
    -------
    (B, h, w) float64: ``values`` where known, the interpolation elsewhere.
    """
    from scipy import sparse
    from scipy.sparse.linalg import spsolve

    v = np.asarray(values, np.float64)
    known = np.asarray(known, bool)
    out = v.copy()
    unk = ~known
    n = int(unk.sum())
    if n == 0:
        return out
    h, w = known.shape
    fallback = v[:, known].mean(axis=1) if known.any() else np.zeros(v.shape[0])
    if not known.any():
        out[:, unk] = fallback[:, None]
        return out
    idx = -np.ones((h, w), np.int64)
    idx[unk] = np.arange(n)
    ys, xs = np.nonzero(unk)
    rows, cols, vals = [], [], []
    deg = np.zeros(n)
    rhs = np.zeros((v.shape[0], n))
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        deg += inside
        p = np.nonzero(inside)[0]
        q_y, q_x = ny[p], nx[p]
        q_unknown = unk[q_y, q_x]
        pu = p[q_unknown]
        rows.append(pu)
        cols.append(idx[q_y[q_unknown], q_x[q_unknown]])
        vals.append(-np.ones(pu.size))
        pk = p[~q_unknown]
        rhs[:, pk] += v[:, q_y[~q_unknown], q_x[~q_unknown]]
    # a tiny pull towards the known mean keeps regions without a known neighbour solvable
    eps = 1e-6
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(deg + eps)
    rhs += eps * fallback[:, None]
    a = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    sol = spsolve(a.tocsc(), rhs.T)
    sol = np.asarray(sol).reshape(n, -1).T
    out[:, unk] = sol
    return out


def fill_from_guide(values: np.ndarray, known: np.ndarray, guide: np.ndarray, *, ridge: float = 1e-4,
                    anchor: bool = True, degree: int = 1, shrink: bool | str = "detail",
                    interp: str = "harmonic") -> np.ndarray:
    """Fill the unknown pixels of ``values`` from the ``guide`` bands.

    Parameters
    ----------
    values : (B, h, w) float array
        The bands to fill (e.g. NIR, SWIR), in any consistent scale; read only where ``known``.
    known : (h, w) bool array
        Pixels whose ``values`` and ``guide`` are both real ground (not masked, not nodata).
    guide : (G, h, w) or (K, G, h, w) float array
        The guide bands everywhere (e.g. red, green, blue after the model's fill), same
        scale as at the known pixels; with a leading axis, K fills of the guide (samples),
        which must agree at the known pixels (the fit is made once, on the first).
    ridge : float
        Ridge penalty (relative to the features' mean square) of the regression.
    anchor : bool
        Add the interpolation of the regression's residual (step 3 above).
    degree : {1, 2}
        Features of the regression: the guide bands (1), or also their pairwise products (2).
    shrink : "detail", True or False
        Weight of the regression's prediction against the interpolation of the band itself:
        ``"detail"`` (default) the least-squares weight of the prediction's fine detail (below
        ~2 px) for the band's, on the known pixels; True the fit's R²; False 1 (prediction only).
    interp : {"harmonic", "biharmonic"}
        Interpolation of the band and of the residual into the unknown pixels.

    Returns
    -------
    (B, h, w) float64 — or (K, B, h, w) for a (K, G, h, w) guide: ``values`` at the known
    pixels, the prediction elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> rgb = np.random.default_rng(0).random((3, 32, 32))
    >>> nir = (2 * rgb[1] - rgb[0])[None]                  # a band the visible ones explain
    >>> known = np.ones((32, 32), bool); known[8:20, 8:20] = False
    >>> filled = fill_from_guide(np.where(known, nir, 0), known, rgb)
    >>> bool(np.abs(filled - nir).max() < 0.01)
    True
    """
    v = np.asarray(values, np.float64)
    g = np.asarray(guide, np.float64)
    single = g.ndim == 3
    gs = g[None] if single else g
    known = np.asarray(known, bool)
    nk = int(known.sum())
    if nk < _MIN_FIT:
        base = harmonic_fill(v, known)
        out = np.repeat(base[None], gs.shape[0], axis=0)
        return out[0] if single else out
    ky, kx = np.nonzero(known)
    stride = max(1, int(np.ceil(nk / _MAX_FIT)))
    ky, kx = ky[::stride], kx[::stride]
    a = _features(gs[0][:, ky, kx], degree).T               # (n, F)
    b = v[:, ky, kx].T                                      # (n, B)
    ata = a.T @ a
    lam = ridge * float(np.trace(ata)) / ata.shape[0]
    reg = lam * np.eye(ata.shape[0])
    reg[0, 0] = 0.0                                         # the intercept is not penalised
    coef = np.linalg.solve(ata + reg, a.T @ b)              # (F, B)
    alpha = np.ones(v.shape[0])
    if shrink == "detail":  # trust the spectral detail as far as it explains the band's fine detail
        alpha = _detail_weight(v, known, np.einsum("fhw,fb->bhw", _features(gs[0], degree), coef))
    elif shrink:  # trust the spectral detail as far as the fit explains the band
        r = b - a @ coef
        alpha = np.clip(1.0 - r.var(axis=0) / np.maximum(b.var(axis=0), 1e-12), 0.0, 1.0)
    fill = harmonic_fill if interp == "harmonic" else _biharmonic
    base = fill(v, known)[:, ~known] if shrink else 0.0
    unk = ~known
    offset = 0.0
    if anchor:  # the residual at the known pixels is the same for every sample of the guide
        pred_known = np.einsum("fn,fb->bn", _features(gs[0][:, known], degree), coef)
        resid = np.zeros_like(v)
        resid[:, known] = v[:, known] - pred_known
        offset = fill(resid, known)[:, unk]
    outs = []
    for gk in gs:
        out = v.copy()
        full = np.einsum("fn,fb->bn", _features(gk[:, unk], degree), coef) + offset
        out[:, unk] = base + alpha[:, None] * (full - base) if shrink else full
        outs.append(out)
    out = np.stack(outs)
    return out[0] if single else out
