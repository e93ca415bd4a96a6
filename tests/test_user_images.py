"""Robust reading of users' images: every bad-input case gets its expected outcome."""
import io

import numpy as np
import pytest
from PIL import Image

from cervix_jax.data import images

RNG: np.random.Generator  # set per test from the seeded `rng` fixture (tests/conftest.py)


@pytest.fixture(autouse=True)
def _seeded_rng(rng):
    global RNG
    RNG = rng


def _rgb(h=40, w=56):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgb_png_roundtrip(tmp_path):
    a = _rgb()
    Image.fromarray(a).save(tmp_path / "a.png")
    r = images.read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(r.image, a)
    assert r.notes == [] and r.error is None


def test_grayscale_to_rgb(tmp_path):
    g = RNG.integers(0, 256, (40, 50), dtype=np.uint8)
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    r = images.read_image(tmp_path / "g.png")
    np.testing.assert_array_equal(r.image, np.stack([g, g, g], -1))
    assert any("grayscale" in n for n in r.notes)


def test_rgba_drops_alpha(tmp_path):
    a = RNG.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    Image.fromarray(a, mode="RGBA").save(tmp_path / "a.png")
    r = images.read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(r.image, a[..., :3])
    assert any("alpha" in n for n in r.notes)


def test_16bit_to_8bit(tmp_path):
    v = RNG.integers(0, 65536, (40, 50), dtype=np.uint16)
    Image.fromarray(v).save(tmp_path / "v.png")  # mode I;16
    r = images.read_image(tmp_path / "v.png")
    ref = np.round(v.astype(np.float64) / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(r.image, np.stack([ref] * 3, -1))
    assert any("16-bit" in n for n in r.notes)


def test_cmyk_to_rgb(tmp_path):
    c = RNG.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    Image.fromarray(c, mode="CMYK").save(tmp_path / "c.tif")
    r = images.read_image(tmp_path / "c.tif")
    cf = c.astype(np.float64)
    ref = (255.0 - cf[..., :3]) * (255.0 - cf[..., 3:]) / 255.0
    assert np.abs(r.image.astype(np.float64) - ref).max() <= 1.0
    assert any("CMYK" in n for n in r.notes)


@pytest.mark.parametrize("orientation,k", [(3, 2), (6, -1), (8, 1)])
def test_exif_rotation_applied(tmp_path, orientation, k):
    a = _rgb(40, 64)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(tmp_path / "e.png", exif=exif)
    r = images.read_image(tmp_path / "e.png")
    np.testing.assert_array_equal(r.image, np.rot90(a, k=k))
    assert any(f"EXIF orientation {orientation}" in n for n in r.notes)


def test_truncated_jpeg_skipped(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_rgb(200, 200)).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    r = images.read_image(tmp_path / "t.jpg")
    assert r.image is None and "truncated" in r.error


@pytest.mark.parametrize("content", [b"path,label\nthis is not an image\n", b""])
def test_non_image_with_image_extension_skipped(tmp_path, content):
    (tmp_path / "x.jpg").write_bytes(content)
    r = images.read_image(tmp_path / "x.jpg")
    assert r.image is None and "not an image" in r.error


def test_tiny_image_skipped(tmp_path):
    Image.fromarray(_rgb(20, 300)).save(tmp_path / "s.png")
    r = images.read_image(tmp_path / "s.png", min_side=32)
    assert r.image is None and "too small" in r.error
    assert images.read_image(tmp_path / "s.png", min_side=16, max_side=400).image.shape == (20, 300, 3)


def test_downscale_keeps_aspect_area_average(tmp_path):
    a = _rgb(48, 64)
    Image.fromarray(a).save(tmp_path / "big.png")
    # min_side applies after the downscale
    r = images.read_image(tmp_path / "big.png", max_side=32, min_side=16)
    ref = a.astype(np.float64).reshape(24, 2, 32, 2, 3).mean((1, 3))  # 2x2 block means
    assert r.image.shape == (24, 32, 3)
    assert np.abs(r.image - ref).max() <= 1.0
    assert any("downscaled from 64x48 to 32x24" in n for n in r.notes)


def test_large_jpeg_draft_downscale(tmp_path):
    y, x = np.mgrid[0:600, 0:900]
    a = np.stack([x * 255 // 900, y * 255 // 600, (x + y) * 255 // 1500], -1).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "big.jpg", quality=95)
    r = images.read_image(tmp_path / "big.jpg", max_side=150)
    assert r.image.shape == (100, 150, 3)
    ref = a.astype(np.float64).reshape(100, 6, 150, 6, 3).mean((1, 3))
    assert np.abs(r.image - ref).mean() < 3.0


def _make(path, h=40, w=40):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb(h, w)).save(path)


def test_discover_class_folders(tmp_path):
    for cls in ("Type_1", "Type_2", "Type_9"):
        _make(tmp_path / cls / "a.png")
    _make(tmp_path / "Type_1" / "sub" / "b.jpg")
    (tmp_path / "Type_2" / "notes.txt").write_text("hello")
    _make(tmp_path / "loose.png")
    found = images.discover(tmp_path, {"Type_1": 0, "Type_2": 1})
    items, problems = found.items, found.problems
    assert found.layout == "class_folders"
    found_items = sorted(("/".join(i.path.split("/")[-2:]), i.label) for i in items)
    assert found_items == [("Type_1/a.png", 0), ("Type_2/a.png", 1), ("sub/b.jpg", 0)]
    reasons = {p["path"].split(str(tmp_path))[-1]: p["reason"] for p in problems}
    assert "not in a class folder" in reasons["/loose.png"]
    assert "not in the label mapping" in reasons["/Type_9/a.png"]
    assert "extension" in reasons["/Type_2/notes.txt"]
    assert len({i.group for i in items}) == len(items)  # one group per file


def test_discover_manifest(tmp_path):
    for n in ("a", "b", "c", "d"):
        _make(tmp_path / "img" / f"{n}.png")
    (tmp_path / "manifest.csv").write_text(
        "path,label,group\nimg/a.png,1,w1\nimg/b.png,0,w1\nimg/missing.png,0,w2\nimg/c.png,7,w3\nimg/a.png,1,w1\n")
    found = images.discover(tmp_path, {"0": 0, "1": 1})
    items, problems = found.items, found.problems
    assert found.layout == "manifest"
    assert ([(i.path.split("/")[-1], i.label, i.group) for i in items]
            == [("a.png", 1, "w1"), ("b.png", 0, "w1")])
    reasons = sorted((p["path"].split("/")[-1], p["reason"].split(" (")[0].split(":")[0][:20])
                     for p in problems)
    assert [r[0] for r in reasons] == ["a.png", "c.png", "d.png", "missing.png"]
    text = " | ".join(p["reason"] for p in problems)
    for phrase in ("listed twice", "not in the label mapping", "not listed in the manifest", "but missing"):
        assert phrase in text
    with pytest.raises(ValueError, match="path,label"):
        (tmp_path / "bad.csv").write_text("file,class\nx,1\n")
        images.discover(tmp_path / "bad.csv", {"1": 1})
