"""tfds builders: build and read back with TensorFlow absent; user folders with bad files."""
import json
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import cervix_jax  # noqa: F401  (registers the builders)
from cervix_jax.data import builders, synthetic
from cervix_jax.train.config import base_config

RNG: np.random.Generator  # set per test from the seeded `rng` fixture (tests/conftest.py)


@pytest.fixture(autouse=True)
def _seeded_rng(rng):
    global RNG
    RNG = rng


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    builder = tfds.builder("synthetic_cervix/tiny", data_dir=str(data_dir))
    builder.download_and_prepare()
    return builder


def test_tiny_reads_back_without_tensorflow(tiny):
    source = tiny.as_data_source("train")
    cfg = tiny.builder_config.synthetic
    assert len(source) == cfg.num_images == 48
    rows = [source[i] for i in range(len(source))]
    assert "tensorflow" not in sys.modules
    assert [int(r["id"]) for r in rows] == list(range(48))
    labels = np.array([int(r["label"]) for r in rows])
    assert labels.sum() == 16 and len(set(int(r["dysplasia"]) for r in rows)) == 2
    assert {int(r["reason"]) > 0 for r in rows} == {0, 1} and rows[0]["cervix_box"].shape == (4,)
    for i in RNG.choice(48, 3, replace=False):  # bit-exact against the generator
        ref = synthetic.generate_example(cfg, int(i))
        for k, v in ref.items():
            np.testing.assert_array_equal(np.asarray(rows[i][k]), v, err_msg=f"key {k} id {i}")
    assert tiny.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
    assert len({int(r["group"]) for r in rows}) == cfg.num_women


def test_prepare_and_load_source_from_config(tiny):
    data = base_config().data
    data.data_dir = str(tiny.data_dir_root)  # already built: prepare() must reuse it
    source, info = builders.load_source(data)
    assert info.full_name == "synthetic_cervix/tiny/2.0.0" and len(source) == 48
    assert "tensorflow" not in sys.modules


def test_paper_configs_declared():
    b = builders.SyntheticCervix.builder_configs
    assert (b["paper_b"].synthetic.width, b["paper_b"].synthetic.height) == (1200, 800)
    assert (b["paper_b"].synthetic.num_images, b["paper_b"].synthetic.num_positive) == (1033, 304)
    assert b["paper_b"].synthetic.label == "treatability"
    a = b["paper_a"].synthetic
    assert (a.height, a.width, a.num_images) == (1176, 1176, 978)
    assert b["paper_a"].synthetic.label == "dysplasia"
    assert (b["paper_a"].synthetic.placement, b["paper_b"].synthetic.placement) == ("centred", "anywhere")
    assert b["evidence"].synthetic.placement == "off_centre"
    assert {"tiny", "demo", "paper_b", "paper_a", "evidence"} <= set(b)  # v1 names kept


def _save(path, array, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)


@pytest.fixture()
def mobileodt(tmp_path):
    """A MobileODT-like folder: good images, odd ones, and bad ones."""
    root = tmp_path / "train"
    good = {}
    for cls in ("Type_1", "Type_2", "Type_3"):
        for j in range(2):
            a = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            _save(root / cls / f"{j}.png", a)
            good[f"{cls}/{j}.png"] = a
    g = RNG.integers(0, 256, (40, 40), dtype=np.uint8)
    _save(root / "Type_2" / "gray.png", g)
    good["Type_2/gray.png"] = np.stack([g] * 3, -1)
    big = RNG.integers(0, 256, (80, 2600, 3), dtype=np.uint8)
    _save(root / "Type_3" / "wide.png", big)
    (root / "Type_1" / "text.jpg").write_text("not an image")
    (root / "Type_3" / "empty.jpg").write_bytes(b"")
    _save(root / "Type_1" / "tiny.png", RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return root, good


def test_cervix_folder_mobileodt(tmp_path, mobileodt, capsys):
    root, good = mobileodt
    builder = tfds.builder("cervix_folder/mobileodt_treatability", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
    out = capsys.readouterr().out
    source = builder.as_data_source("train")
    rows = [source[i] for i in range(len(source))]
    assert "tensorflow" not in sys.modules
    assert len(rows) == 8  # 6 good + gray + wide
    report = json.loads((builder.data_path / builders.REPORT_NAME).read_text())
    skipped = {p["path"].split("/")[-1]: p["reason"] for p in report["skipped"]}
    assert set(skipped) == {"text.jpg", "empty.jpg", "tiny.png"}
    assert "too small" in skipped["tiny.png"] and "not an image" in skipped["text.jpg"]
    assert report["counts"]["written"] == 8 and "skipped 3" in out
    # sorted discovery: ids follow Type_1, Type_2 (0, 1, gray), Type_3 (0, 1, wide)
    names = ["Type_1/0.png", "Type_1/1.png", "Type_2/0.png", "Type_2/1.png", "Type_2/gray.png",
             "Type_3/0.png", "Type_3/1.png", "Type_3/wide.png"]
    for r, name in zip(rows, names):
        assert int(r["label"]) == (0 if name.startswith("Type_1") else 1)
        assert int(r["treatability"]) == int(r["label"]) and int(r["dysplasia"]) == -1
        assert int(r["has_masks"]) == 0 and np.isnan(r["cervix_center"]).all()
        assert r["os_mask"].shape == r["image"].shape[:2] and not r["lesion_mask"].any()
        if name in good:
            np.testing.assert_array_equal(r["image"], good[name])
    assert rows[-1]["image"].shape == (37, 1200, 3)  # 80x2600 -> longer border 1200, aspect kept
    assert len({int(r["group"]) for r in rows}) == 8
    assert [int(r["id"]) for r in rows] == list(range(8))


def test_cervix_folder_manifest_groups_and_mismatch(tmp_path):
    root = tmp_path / "imgs"
    arrays = {n: RNG.integers(0, 256, (40, 48, 3), dtype=np.uint8) for n in "abcd"}
    for n, a in arrays.items():
        _save(root / "x" / f"{n}.png", a)
    (root / "manifest.csv").write_text(
        "path,label,group\nx/a.png,1,w1\nx/b.png,1,w1\nx/c.png,0,w2\nx/gone.png,0,w3\n")
    data = dict(name="cervix_folder/identity", data_dir=str(tmp_path / "tfds"), manual_dir=str(root))
    source, info = builders.load_source(data)
    rows = [source[i] for i in range(len(source))]
    assert [int(r["label"]) for r in rows] == [1, 1, 0]
    assert [int(r["group"]) for r in rows] == [0, 0, 1]
    for r, n in zip(rows, "abc"):
        np.testing.assert_array_equal(r["image"], arrays[n])
    report = json.loads((builders.builder_for(data).data_path / builders.REPORT_NAME).read_text())
    reasons = " | ".join(p["reason"] for p in report["skipped"])
    assert "but missing" in reasons and "not listed in the manifest" in reasons  # gone.png, d.png
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ValueError, match="was built from"):
        builders.prepare({**data, "manual_dir": str(other)})


def test_cli_custom_label_map(tmp_path, mobileodt):
    root, _ = mobileodt
    builders.main(["--name", "cervix_folder", "--manual_dir", str(root), "--data_dir", str(tmp_path / "d"),
                   "--label_map", "Type_1=0,Type_2=0,Type_3=1", "--label", "treatability"])
    b = builders.builder_for(dict(name="cervix_folder", data_dir=str(tmp_path / "d")),
                             label_map={"Type_1": 0, "Type_2": 0, "Type_3": 1})
    rows = [r for r in b.as_data_source("train")]
    assert [int(r["label"]) for r in rows] == [0, 0, 0, 0, 0, 1, 1, 1]
    with pytest.raises(SystemExit):
        builders.main(["--name", "cervix_folder", "--label_map", "Type_1=2"])
