"""cervix_folder on the folders users really have: ImageFolder class names, a CSV as manual_dir, edited
inputs (stale builds), portrait and EXIF-rotated photos through the batch pipeline, slivers, files
the walk cannot read, manifests in other encodings, non-UTF-8 file names under a strict UTF-8 stdout."""
import io
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from cervix_jax.data import builders, images, pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _save(path, array, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return array


def _rgb(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _data(tmp_path, manual_dir, name="cervix_folder"):
    return dict(name=name, data_dir=str(tmp_path / "tfds"), manual_dir=str(manual_dir))


def _rows(source):
    return [source[i] for i in range(len(source))]


def test_imagefolder_convention_and_paper_b_classes(tmp_path, rng, capsys):
    root = tmp_path / "colpo"
    arrays = {f"{cls}/{j}.png": _save(root / cls / f"{j}.png", _rgb(rng, 40, 48))
              for cls in ("treatable", "not_treatable") for j in range(2)}
    # The default config: treatable/not_treatable are paper B's classes (1 = not treatable, referral).
    source, _ = builders.load_source(_data(tmp_path, root))
    out = capsys.readouterr().out
    rows = _rows(source)
    names = ["not_treatable/0.png", "not_treatable/1.png", "treatable/0.png", "treatable/1.png"]
    assert [int(r["label"]) for r in rows] == [1, 1, 0, 0]
    assert [int(r["treatability"]) for r in rows] == [1, 1, 0, 0]
    assert {int(r["dysplasia"]) for r in rows} == {-1}
    for r, n in zip(rows, names):
        np.testing.assert_array_equal(r["image"], arrays[n])
    build = builders.builder_for(_data(tmp_path, root)).data_path
    saved = json.loads((build / builders.LABEL_MAP_NAME).read_text())
    assert saved["label_map"] == {"not_treatable": 1, "treatable": 0}
    assert saved["label_kind"] == "treatability"
    assert "'not_treatable' -> 1, 'treatable' -> 0" in out and "paper B" in out

    # Any other two names: sorted names -> 0, 1 (torchvision / Keras / tfds ImageFolder).
    other = tmp_path / "other"
    for cls in ("benign", "alarming"):
        _save(other / cls / "a.png", _rgb(rng, 40, 40))
    source, _ = builders.load_source({**_data(tmp_path, other), "data_dir": str(tmp_path / "tfds2")})
    assert [int(r["label"]) for r in _rows(source)] == [0, 1]  # alarming, benign
    assert "'alarming' -> 0, 'benign' -> 1" in capsys.readouterr().out

    # An explicit mapping that matches nothing names the folders found and the mapping expected.
    with pytest.raises(ValueError) as err:
        builders.prepare(_data(tmp_path / "id", root, "cervix_folder/identity"))
    msg = str(err.value)
    assert "'not_treatable' (2 files)" in msg and "'treatable' (2 files)" in msg and "{'0': 0, '1': 1}" in msg
    # Three classes cannot be a binary label by convention.
    _save(other / "third" / "a.png", _rgb(rng, 40, 40))
    with pytest.raises(ValueError, match="exactly 2 classes.*'alarming', 'benign', 'third'"):
        images.discover(other)


def test_manual_dir_is_the_csv_and_stale_builds(tmp_path, rng, capsys):
    root = tmp_path / "m"
    arrays = [_save(root / "img" / f"{i}.png", _rgb(rng, 36, 44)) for i in range(4)]
    csv = root / "manifest.csv"
    csv.write_text("path,label,group\n" + "".join(f"img/{i}.png,{i % 2},w{i // 2}\n" for i in range(4)))
    data = _data(tmp_path, csv, "cervix_folder/identity")  # manual_dir = the CSV file itself
    source, _ = builders.load_source(data)
    assert [int(r["label"]) for r in _rows(source)] == [0, 1, 0, 1]
    np.testing.assert_array_equal(source[3]["image"], arrays[3])
    builders.load_source({**data, "manual_dir": str(root)})  # the folder holding it: the same build, reused
    with pytest.raises(ValueError, match="inside data.manual_dir"):
        builders.prepare({**data, "data_dir": str(root / "tfds")})

    csv.write_text(csv.read_text().replace(",0,", ",1,"))  # labels edited
    with pytest.raises(ValueError, match="stale: the manifest's content changed.*--rebuild"):
        builders.prepare(data)
    builder = builders.prepare(data, rebuild=True)
    assert [int(r["label"]) for r in _rows(builder.as_data_source("train"))] == [1, 1, 1, 1]

    _save(root / "img" / "0.png", _rgb(rng, 36, 44))  # an image replaced, manifest unchanged
    os.utime(root / "img" / "0.png", ns=(1, 1))
    with pytest.raises(ValueError, match="stale: the files changed"):
        builders.prepare(data)
    (root / "img" / "new.png").write_bytes(b"")  # a file added (class folders work the same way)
    with pytest.raises(ValueError, match="4 then, 5 now"):
        builders.prepare(data)
    capsys.readouterr()


def test_launch_prepare_refuses_a_stale_build_and_rebuilds_it(tmp_path, rng):
    """Through the command line: a stale build is an error message (exit 2, no traceback); --rebuild
    rebuilds it with the edited labels."""
    import subprocess
    root = tmp_path / "m"
    for i in range(4):
        _save(root / "img" / f"{i}.png", _rgb(rng, 36, 44))
    csv = root / "manifest.csv"
    csv.write_text("path,label,group\n" + "".join(f"img/{i}.png,{i % 2},w{i // 2}\n" for i in range(4)))
    data = _data(tmp_path, csv, "cervix_folder/identity")
    builders.prepare(data)
    csv.write_text(csv.read_text().replace(",0,", ",1,"))  # labels edited after the build

    def prepare(*extra):
        args = [sys.executable, "launch.py", "prepare", "--config", "configs/demo.py",
                *(f"--config.data.{k}={v}" for k, v in data.items()), *extra]
        return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)

    p = prepare()
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-4000:])
    assert "stale: the manifest's content changed" in p.stderr and "--rebuild" in p.stderr
    assert "Traceback" not in p.stderr
    p = prepare("--rebuild")
    assert p.returncode == 0, (p.returncode, p.stdout[-2000:], p.stderr[-4000:])
    assert "rebuilding" in p.stdout
    source, _ = builders.load_source(data)
    assert [int(r["label"]) for r in _rows(source)] == [1, 1, 1, 1]


def test_manifest_encodings(tmp_path, rng):
    _save(tmp_path / "img" / "café.png", _rgb(rng, 40, 40))
    _save(tmp_path / "img" / "b.png", _rgb(rng, 40, 40))
    text = "path,label\nimg/café.png,1\nimg/b.png,0\n"
    for encoding, data in [("utf-8-sig", b"\xef\xbb\xbf" + text.encode()),  # Excel "CSV UTF-8"
                           ("latin-1 (windows-1252)", text.encode("latin-1"))]:
        (tmp_path / "manifest.csv").write_bytes(data)
        found = images.discover(tmp_path, {"0": 0, "1": 1})
        assert found.manifest_encoding == encoding and not found.problems
        assert [(os.path.basename(i.path), i.label) for i in found.items] == [("café.png", 1), ("b.png", 0)]
    for data, why in [(text.encode("utf-16"), "UTF-16"), (b"path,label\nimg/b\x81.png,0\n", "neither UTF-8")]:
        (tmp_path / "manifest.csv").write_bytes(data)
        with pytest.raises(ValueError, match=f"manifest {tmp_path / 'manifest.csv'}: .*{why}"):
            images.discover(tmp_path, {"0": 0, "1": 1})


def test_size_limits_apply_after_the_downscale(tmp_path, rng):
    sliver = rng.integers(0, 256, (40, 20000, 3), dtype=np.uint8)  # kept as 1200 x 2 before the fix
    _save(tmp_path / "sliver.png", sliver, compress_level=0)
    r = images.read_image(tmp_path / "sliver.png")
    assert r.image is None and "too small: 20000x40 (WxH), 1200x2 after downscaling" in r.error
    ok = images.read_image(tmp_path / "sliver.png", max_side=20000, min_side=32)
    assert ok.image.shape == (40, 20000, 3)


def _strict_stdout(monkeypatch):
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)
    monkeypatch.setattr(sys, "stdout", out)
    return out


def test_unreadable_entries_reported_and_strict_utf8_stdout(tmp_path, rng, monkeypatch):
    root = tmp_path / "u"
    for cls in ("0", "1"):
        _save(root / cls / "good.png", _rgb(rng, 40, 40))
    _save(root / "1" / "locked" / "inside.png", _rgb(rng, 40, 40))
    (root / "0" / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (root / "stray_link.png").symlink_to(tmp_path / "nowhere_either.png")
    bad_name = root / "0" / os.fsdecode(b"bad_\xff.jpg")  # not UTF-8, and not an image
    bad_name.write_text("not an image")
    locked = str(root / "1" / "locked")
    real_scandir = os.scandir

    def scandir(path="."):  # what a folder of mode 000 does for a user without CAP_DAC_OVERRIDE
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = _strict_stdout(monkeypatch)  # like PYTHONIOENCODING=utf-8:strict
    builder = builders.prepare(_data(tmp_path, root))
    monkeypatch.undo()
    printed = out.buffer.getvalue().decode("utf-8")
    report = json.loads((builder.data_path / builders.REPORT_NAME).read_text())
    reasons = {os.path.relpath(p["path"], root): p["reason"] for p in report["skipped"]}
    assert "folder cannot be read: PermissionError" in reasons["1/locked"]
    assert "dangling symbolic link" in reasons["0/dangling.png"]
    assert "dangling symbolic link" in reasons["stray_link.png"]
    assert "not an image" in reasons[os.path.relpath(bad_name, root)]
    assert report["counts"]["written"] == 2 and "bad_\\xff.jpg" in printed


def test_nothing_readable_says_why_without_a_missing_report(tmp_path, rng, monkeypatch):
    root = tmp_path / "bad"
    for cls in ("0", "1"):
        (root / cls).mkdir(parents=True)
        (root / cls / os.fsdecode(b"x\xe9.png")).write_bytes(b"\x89PNG truncated")
    out = _strict_stdout(monkeypatch)
    expected = r"(?s)no image of .* could be read \(2 files skipped.*x\\xe9.png: not an image"
    with pytest.raises(ValueError, match=expected):
        builders.prepare(_data(tmp_path, root))
    assert builders.REPORT_NAME not in out.buffer.getvalue().decode("utf-8")


def _fit(h, w, longer, box):
    """Independent of the pipeline: the largest size with the aspect kept, longer side <= longer, in box."""
    s = min(longer / max(h, w), box[0] / h, box[1] / w)
    return round(h * s), round(w * s)


def test_mixed_orientations_batch(tmp_path, rng):
    root = tmp_path / "p"
    _save(root / "0" / "landscape.png", _rgb(rng, 60, 90))
    _save(root / "0" / "portrait.jpg", _rgb(rng, 80, 60), quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 60 x 90 (landscape), shown rotated: 90 x 60 (portrait)
    _save(root / "1" / "rotated.png", _rgb(rng, 60, 90), exif=exif)
    _save(root / "1" / "square.png", _rgb(rng, 70, 70))
    source, _ = builders.load_source(_data(tmp_path, root))
    pad, longer = (32, 48), 48
    def pre(ex):
        return pipeline.preprocess(ex, image_size=longer, pad_to=pad, normalization="unit", with_masks=True)

    loader = pipeline.Loader(source, np.arange(len(source)), global_batch_size=2, preprocess_fn=pre,
                             shuffle=True, seed=int(rng.integers(1 << 30)), drop_remainder=False,
                             num_devices=1, num_workers=2)
    seen = 0
    for batch in loader.epoch(0):
        assert batch["image"].shape == (1, 2, *pad, 3)
        for k in range(2):
            ex = source[int(batch["id"][0, k])]
            h, w = _fit(*ex["image"].shape[:2], longer, pad)
            valid = batch["valid"][0, k]
            assert valid[:h, :w].all() and valid.sum() == h * w
            ref = np.asarray(Image.fromarray(ex["image"]).resize((w, h), Image.BILINEAR), np.float32) / 255
            np.testing.assert_allclose(batch["image"][0, k, :h, :w], ref, atol=1e-6)
            assert not batch["image"][0, k][valid == 0].any()
            seen += 1
    assert seen == 4
    # Masks follow the same fitted size (a portrait example with a real mask).
    image, mask = _rgb(rng, 90, 60), (rng.random((90, 60)) < 0.3).astype(np.uint8)
    ex = {"image": image, "label": 1, "id": 0, **{k: mask for k in pipeline.MASK_KEYS}}
    out = pre(ex)
    ref = np.asarray(Image.fromarray(mask).resize((21, 32), Image.NEAREST))
    np.testing.assert_array_equal(out["lesion_mask"][:32, :21], ref)
    assert out["valid"].sum() == 32 * 21 and not out["lesion_mask"][:, 21:].any()
