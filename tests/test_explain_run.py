"""explain_to_dir end to end on a tiny model: files, index.json, table, maps vs a NumPy pipeline."""
import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from cervix_jax.explain import explain_to_dir
from cervix_jax.models.parts import ExplainableModel

H, W, S, K = 16, 20, 4, 5


def softmax64(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def tiny(rng):
    A = rng.normal(size=(3, K)).astype(np.float32)
    Wd = rng.normal(size=(K, 2)).astype(np.float32)
    b = rng.normal(size=2).astype(np.float32)

    def features(x, xp=jnp):
        return xp.tanh(x.reshape(H // S, S, W // S, S, 3).mean((1, 3)) @ A)

    def post_pool(p):
        return jax.nn.softmax(p @ Wd + b)

    model = ExplainableModel(features=features, head=lambda f: post_pool(f.mean((0, 1))),
                             scores=lambda x: post_pool(features(x).mean((0, 1))), post_pool=post_pool,
                             kernel=jnp.asarray(Wd), weights=lambda x: features(x).mean(-1),
                             class_names=("treatable", "not treatable"))
    head64 = lambda f: softmax64(f.mean((0, 1)) @ Wd.astype(np.float64) + b)  # noqa: E731
    return model, lambda x: features(np.asarray(x, np.float64), np), head64


def numpy_crm_png(features64, head64):
    f = features64
    s = head64(f)
    m = np.zeros(f.shape[:2])
    for y in range(f.shape[0]):
        for x in range(f.shape[1]):
            g = f.copy()
            g[y, x] = 0
            m[y, x] = np.sum((s - head64(g)) ** 2)
    m = m / m.max()
    up = np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize((W, H), Image.BILINEAR))
    return np.round(np.clip(up, 0, 1) * 255).astype(np.uint8), up


def test_explain_to_dir_writes_the_layout(tmp_path, rng):
    model, features64, head64 = tiny(rng)
    examples = []
    for i in range(3):
        image = rng.uniform(0, 1, size=(H, W, 3)).astype(np.float32)
        masks = {f"{m}_mask": (rng.uniform(size=(H, W)) < 0.3).astype(np.uint8)
                 for m in ("lesion", "os", "tz", "cervix")}
        examples.append(dict(image=image, display=(image * 255).astype(np.uint8), label=i % 2,
                             id=10 + i, has_masks=1, **masks))
    out = tmp_path / "test"
    table = explain_to_dir(model, iter(examples), str(out), methods=("cam", "crm"), threshold=0.2,
                           batch_size=2, auc_steps=4)
    index = json.loads((out / "index.json").read_text())
    assert index["split"] == "test" and index["methods"] == ["cam", "crm", "weights"]
    assert index["class_names"] == ["treatable", "not treatable"]
    assert [it["id"] for it in index["items"]] == [10, 11, 12]
    for name in ["grid_0.png", "grid_1.png", "table.md", "table.csv"]:
        assert (out / name).exists(), name
    for item, ex in zip(index["items"], examples):
        scores = head64(features64(ex["image"]))
        assert item["pred"] == int(np.argmax(scores)) and item["score"] == pytest.approx(scores[1], rel=1e-4)
        assert item["correct"] == (item["pred"] == ex["label"])
        np.testing.assert_array_equal(np.asarray(Image.open(out / item["image"])), ex["display"])
        for m in index["methods"]:
            assert np.asarray(Image.open(out / item["overlays"][m])).shape == (H, W, 3)
        png = np.asarray(Image.open(out / item["maps"]["crm"]))
        ref_png, ref_heat = numpy_crm_png(features64(ex["image"]), head64)
        assert np.abs(png.astype(int) - ref_png).max() <= 1
        metrics = item["metrics"]["crm"]
        assert metrics["roi_area"] == pytest.approx(np.mean(ref_heat >= 0.2), abs=2 / (H * W))
        a, b = ref_heat >= 0.2, ex["lesion_mask"] > 0
        assert metrics["iou_lesion"] == pytest.approx((a & b).sum() / (a | b).sum(), abs=0.02)
        assert 0 <= metrics["deletion_auc"] <= 1 and 0 <= metrics["insertion_auc"] <= 1
    with open(out / "table.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    for m in index["methods"]:
        for key, value in table[m].items():
            mean = np.mean([it["metrics"][m][key] for it in index["items"]])
            assert value == pytest.approx(mean, rel=1e-6)
            assert float(rows[m][key]) == pytest.approx(value, rel=1e-5)
    assert os.path.getsize(out / "table.md") > 0


def test_explain_to_dir_drops_cam_without_kernel(tmp_path, rng):
    model, _, _ = tiny(rng)
    model = ExplainableModel(features=model.features, head=model.head, scores=model.scores)
    image = rng.uniform(0, 1, size=(H, W, 3)).astype(np.float32)
    ex = dict(image=image, display=(image * 255).astype(np.uint8), label=0, id=0)
    with pytest.warns(UserWarning, match="cam"):
        table = explain_to_dir(model, [ex], str(tmp_path / "val"), batch_size=1, auc_steps=2)
    assert list(table) == ["crm"] and np.isnan(table["crm"]["iou_lesion"])


def strict_json(text):
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_padding_ignored_and_nonfinite_inputs_flagged(tmp_path, rng):
    """Issue 15: a padded image's map and metrics cover its valid region only; an image with a NaN
    pixel is flagged with null score / prediction / metrics, and index.json stays strict JSON."""
    model, features64, head64 = tiny(rng)
    model = ExplainableModel(features=model.features, head=model.head, scores=model.scores,
                             post_pool=model.post_pool, class_names=model.class_names)
    h, w = 10, 13                                    # feature cells (4x4 px): rows 0-2, cols 0-3 hold pixels
    valid = np.zeros((H, W), np.uint8)
    valid[:h, :w] = 1
    images = rng.uniform(0, 1, size=(3, H, W, 3)).astype(np.float32)
    images[0] *= valid[..., None]
    images[2, 3, 5, 1] = np.nan
    examples = [dict(image=im, display=(np.nan_to_num(im) * 255).astype(np.uint8), label=i % 2, id=i)
                for i, im in enumerate(images)]
    examples[0]["valid"] = valid
    out = tmp_path / "test"
    with pytest.warns(UserWarning, match="nonfinite_input"):
        table = explain_to_dir(model, examples, str(out), methods=("crm",), batch_size=3, auc_steps=4)
    index = strict_json((out / "index.json").read_text())
    padded, full, bad = index["items"]
    assert padded["flags"] == [] and full["flags"] == []
    assert bad["flags"][:2] == ["nonfinite_input", "nonfinite_scores"]
    assert bad["score"] is None and bad["pred"] is None and bad["correct"] is False
    assert all(v is None for v in bad["metrics"]["crm"].values())
    # the padded image: CRM max-normalised over the cells that hold image pixels, 0 on the padding
    f = features64(images[0])
    s = head64(f)
    m = np.zeros(f.shape[:2])
    for y in range(f.shape[0]):
        for x in range(f.shape[1]):
            g = f.copy()
            g[y, x] = 0
            m[y, x] = np.sum((s - head64(g)) ** 2)
    keep = np.zeros_like(m, bool)
    keep[:3, :4] = True
    m = np.where(keep, m, 0) / m[keep].max()
    up = np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize((W, H), Image.BILINEAR))
    up = np.where(valid > 0, up, 0.0)
    png = np.asarray(Image.open(out / padded["maps"]["crm"])).astype(int)
    assert np.abs(png - np.round(np.clip(up, 0, 1) * 255)).max() <= 1
    assert png[valid == 0].max() == 0
    assert padded["metrics"]["crm"]["roi_area"] == pytest.approx(np.mean(up[valid > 0] >= 0.2),
                                                                 abs=2 / (h * w))
    # the table averages the finite examples only
    assert table["crm"]["roi_area"] == pytest.approx(
        np.mean([padded["metrics"]["crm"]["roi_area"], full["metrics"]["crm"]["roi_area"]]), rel=1e-6)
