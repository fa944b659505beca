"""Training masks: every kind, coverage ranges, never empty."""
from __future__ import annotations

import numpy as np
import pytest

from geot2e.train.masks import MASK_KINDS, brush_strokes, cloud_blobs, edge_band, random_mask, rectangle

SEEDS = range(40)


@pytest.mark.parametrize("h,w", [(32, 32), (33, 47)])
def test_cloud_blob_coverage_in_range(h, w):
    covs = []
    for s in SEEDS:
        m = cloud_blobs(np.random.default_rng(s), h, w)
        assert m.shape == (h, w) and m.dtype == bool
        covs.append(m.mean())
    covs = np.array(covs)
    assert covs.min() >= 0.1 - 2 / (h * w) - 0.02 and covs.max() <= 0.6 + 0.02
    assert covs.std() > 0.05  # coverage varies from mask to mask


def test_cloud_blob_requested_coverage():
    for cov in (0.15, 0.3, 0.45):
        m = cloud_blobs(np.random.default_rng(1), 64, 64, coverage=cov)
        assert m.mean() == pytest.approx(cov, abs=0.02)


def test_cloud_blobs_are_blobs_not_salt_and_pepper():
    from scipy import ndimage

    m = cloud_blobs(np.random.default_rng(2), 64, 64, coverage=0.3)
    _, n = ndimage.label(m)
    assert n <= 12  # a few connected clouds, not hundreds of specks


def test_rectangle_and_edge_band_ranges():
    for s in SEEDS:
        r = rectangle(np.random.default_rng(s), 40, 40)
        ys, xs = np.nonzero(r)
        assert r.sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)       # one solid rectangle
        assert 0.2 * 0.2 - 0.01 <= r.mean() <= 0.7 * 0.7 + 0.01
        e = edge_band(np.random.default_rng(s), 40, 40)
        touches = [e[0].all(), e[-1].all(), e[:, 0].all(), e[:, -1].all()]
        assert sum(touches) >= 1                                  # a full band along one side
        assert 0.2 - 0.03 <= e.mean() <= 0.6 + 0.03


def test_brush_strokes_nonempty_partial():
    covs = [brush_strokes(np.random.default_rng(s), 32, 32).mean() for s in range(15)]
    assert min(covs) > 0 and max(covs) < 1


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_each_kind_selectable_and_never_empty(kind):
    for s in range(15):
        m = random_mask(np.random.default_rng(s), 24, 40, weights={kind: 1.0})
        assert m.shape == (24, 40) and m.dtype == bool and m.any()
        if kind == "full":
            assert m.all()
        else:
            assert not m.all()


def test_default_mix_never_empty_and_covers_kinds():
    fulls = 0
    for s in range(200):
        m = random_mask(np.random.default_rng(s), 16, 16)
        assert m.any()
        fulls += bool(m.all())
    assert 5 <= fulls <= 45  # 'full' has weight 0.10 of 200 draws


def test_training_batch_masks_shape_and_values():
    from geot2e.train.loop import _masks

    m = _masks(np.random.default_rng(0), 5, 32, {"clouds": 1.0})
    assert tuple(m.shape) == (5, 1, 32, 32)
    assert set(np.unique(m.numpy())) <= {0.0, 1.0}
    assert (m.flatten(1).sum(1) > 0).all()
