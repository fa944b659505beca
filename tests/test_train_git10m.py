"""Git-10M-format parquet reader, on tiny files of that schema made here (pyarrow + PIL)."""
from __future__ import annotations

import io
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from geot2e.errors import ParameterError
from geot2e.train.git10m import Git10MDataset, MixedDataset, decode_image, gsd_from_row

SIZE = 32

# automatic captions are longer than the tiny test models' 16-token context: expected
pytestmark = pytest.mark.filterwarnings("ignore::geot2e.errors.PromptTruncatedWarning")


def _png(a: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _solid(rgb, h, w):
    return np.broadcast_to(np.asarray(rgb, np.uint8), (h, w, 3)).copy()


ROWS = [  # (image array, format, caption, resolution m, Google level)
    (_solid((200, 40, 40), 64, 64), "PNG", "a red roof", 0.5, 18),                # resolution wins over level
    (_solid((40, 200, 40), 48, 80), "PNG", "green fields", None, 16),             # level 16 -> 2 m
    (_solid((40, 40, 200), 20, 20), "JPEG", "a blue lake", None, None),           # unknown GSD, small image
    (_solid((128, 128, 128), 96, 96), "JPEG", "grey pavement", float("nan"), 0),  # level 0 = unknown
]


@pytest.fixture(scope="module")
def parquet_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("git10m")
    table = pa.table({
        "image": pa.array([_png(a, f) for a, f, *_ in ROWS], type=pa.binary()),
        "caption": [r[2] for r in ROWS],
        "resolution": pa.array([r[3] for r in ROWS], type=pa.float64()),
        "Google_location": pa.array([r[4] for r in ROWS], type=pa.int64()),
    })
    p = d / "part-00000.parquet"
    pq.write_table(table, p, row_group_size=2)              # two row groups
    return p


@pytest.fixture(scope="module")
def hf_struct_file(tmp_path_factory):
    """Hugging Face layout: image as a {bytes, path} struct, level as a string."""
    d = tmp_path_factory.mktemp("git10m_hf")
    img = pa.array([{"bytes": _png(_solid((10, 20, 30), 40, 40)), "path": "a.png"}],
                   type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    table = pa.table({"image": img, "caption": ["dark water"], "resolution": pa.array([None], pa.float64()),
                      "Google_location": ["level 15"]})
    pq.write_table(table, d / "hf.parquet")
    return d


def test_gsd_rule():
    assert gsd_from_row(0.5, 18) == 0.5
    assert gsd_from_row(None, 16) == 2.0
    assert gsd_from_row(None, 17) == 1.0 and gsd_from_row(None, 12) == 32.0
    assert gsd_from_row(float("nan"), "15") == 4.0 and gsd_from_row(None, "level 15") == 4.0
    assert math.isnan(gsd_from_row(None, None)) and math.isnan(gsd_from_row(None, 0))


def test_rows_decode_exactly(parquet_file):
    ds = Git10MDataset(parquet_file, size=SIZE)
    assert len(ds) == 4
    r = ds.row(1)
    assert r["caption"] == "green fields" and r["gsd"] == 2.0 and r["image"].shape == (3, 48, 80)
    np.testing.assert_allclose(r["image"][:, 0, 0], np.array([40, 200, 40]) / 255.0, atol=1e-7)
    assert math.isnan(ds.row(2)["gsd"]) and math.isnan(ds.row(3)["gsd"])
    with pytest.raises(IndexError):
        ds.row(4)


def test_samples_shape_colour_gsd(parquet_file):
    ds = Git10MDataset(parquet_file, size=SIZE, min_crop=0.5, seed=0)
    rng = np.random.default_rng(0)
    by_caption = {}
    for _ in range(40):
        s = ds.sample(rng)
        assert tuple(s["image"].shape) == (3, SIZE, SIZE) and s["image"].dtype == torch.float32
        by_caption.setdefault(s["caption"], []).append(s)
    assert set(by_caption) == {r[2] for r in ROWS}
    for (a, fmt, cap, res, lvl) in ROWS:
        for s in by_caption[cap]:
            expect = a[0, 0].astype(np.float32) / 255.0 * 2 - 1          # solid colours stay solid
            tol = 1e-5 if fmt == "PNG" else 0.03
            np.testing.assert_allclose(s["image"].numpy(), expect[:, None, None] * np.ones((3, SIZE, SIZE)),
                                       atol=tol)
            base = gsd_from_row(res, lvl)
            if math.isnan(base):
                assert math.isnan(s["gsd"])
            else:
                # the crop side lies in [min_crop, 1] x the short side; the GSD scales with it
                short = min(a.shape[:2])
                assert base * 0.5 * short / SIZE - 1e-6 <= s["gsd"] <= base * short / SIZE + 1e-6


def test_gsd_follows_the_crop_on_a_pattern(tmp_path):
    # 1-px checkerboard at 1 m: any crop area-averaged to 32 px must average the pattern out
    # and carry gsd = side / 32 m
    a = (np.indices((128, 128)).sum(0) % 2 * 255).astype(np.uint8)
    img = np.stack([a, a, a], -1)
    pq.write_table(pa.table({"image": [_png(img)], "caption": ["checker"], "resolution": [1.0],
                             "Google_location": [17]}), tmp_path / "c.parquet")
    ds = Git10MDataset(tmp_path / "c.parquet", size=SIZE, min_crop=0.5, flips=False)
    rng = np.random.default_rng(1)
    for _ in range(10):
        s = ds.sample(rng)
        assert 64 / SIZE - 1e-6 <= s["gsd"] <= 128 / SIZE + 1e-6
        assert abs(float(s["image"].mean())) < 0.05                    # mean grey (0 in [-1, 1])
        if abs(s["gsd"] - round(s["gsd"])) < 1e-9 and round(s["gsd"]) % 2 == 0:
            assert float(s["image"].abs().max()) < 1e-5               # even integer factor: exactly grey


def test_batch_and_hf_layout(parquet_file, hf_struct_file):
    ds = Git10MDataset([parquet_file, hf_struct_file], size=SIZE)
    assert len(ds) == 5
    b = ds.batch(np.random.default_rng(0), 6)
    assert tuple(b["image"].shape) == (6, 3, SIZE, SIZE) and b["gsd"].dtype == torch.float32
    assert len(b["caption"]) == 6 and all(isinstance(c, str) for c in b["caption"])
    r = ds.row(4)
    assert r["caption"] == "dark water" and r["gsd"] == 4.0
    b16 = ds.batch(np.random.default_rng(0), 2, size=16)
    assert tuple(b16["image"].shape) == (2, 3, 16, 16)


def test_errors(tmp_path, parquet_file):
    pq.write_table(pa.table({"img": [b"x"], "caption": ["c"]}), tmp_path / "bad.parquet")
    with pytest.raises(ParameterError, match="image_column"):
        Git10MDataset(tmp_path / "bad.parquet")
    with pytest.raises(ParameterError, match="not found"):
        Git10MDataset(tmp_path / "nothing.parquet")
    with pytest.raises(ParameterError, match="RGB"):
        Git10MDataset(parquet_file, bands=4)
    with pytest.raises(ParameterError, match="RGB"):
        decode_image(_png(_solid((1, 2, 3), 4, 4)), bands=4)


def test_mixed_with_raster_tiles_and_training_steps(parquet_file, data_dir, tmp_path):
    from geot2e.models import Text2Earth, tiny_config
    from geot2e.train import StageConfig, TileDataset, load_raster_source, train_denoiser

    tiles = TileDataset([load_raster_source(data_dir / "landsat_224078_rgb_crop.tif", nodata=0)], size=SIZE,
                        gsd_max=120.0)
    mixed = MixedDataset([tiles, Git10MDataset(parquet_file, size=SIZE)], [0.5, 0.5])
    b = mixed.batch(np.random.default_rng(0), 12)
    git_caps = {r[2] for r in ROWS}
    n_git = sum(c in git_caps for c in b["caption"])
    assert 0 < n_git < 12 and tuple(b["image"].shape) == (12, 3, SIZE, SIZE)
    # the training loop takes the mixture as it is; unknown (NaN) GSDs use the null resolution
    torch.manual_seed(0)
    model = Text2Earth(tiny_config())
    log = train_denoiser(model, mixed, StageConfig(steps=2, batch_size=4, bf16=False, log_every=1, save_every=2,
                                                   warmup=1), tmp_path, progress=False)
    assert [e["step"] for e in log] == [1, 2] and all(math.isfinite(e["loss_raw"]) for e in log)
