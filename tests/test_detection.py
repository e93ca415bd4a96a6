"""Detection maths against independent NumPy float64 constructions and pycocotools."""
import contextlib
import io
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cervix_jax import detection as det
from cervix_jax.detection import matching


def random_boxes(rng, n, hw=(200, 300), min_size=0.0):
    xy = rng.uniform(0, 1, (n, 2)) * np.array([hw[1], hw[0]])
    wh = rng.uniform(min_size, 1, (n, 2)) * np.array([hw[1], hw[0]]) / 2
    return np.concatenate([xy, xy + wh], 1)


# --- anchors -------------------------------------------------------------------------------------------

def keras_anchors_loop(h, w):
    """keras-retinanet's rule written out position by position (float64)."""
    out = []
    for level, size in zip(range(3, 8), (32, 64, 128, 256, 512)):
        stride = 2 ** level
        fh, fw = int(np.ceil(h / stride)), int(np.ceil(w / stride))
        for y in range(fh):
            for x in range(fw):
                cx, cy = (x + 0.5) * stride, (y + 0.5) * stride
                for ratio in (0.5, 1.0, 2.0):
                    for scale in (1.0, 2 ** (1 / 3), 2 ** (2 / 3)):
                        area = (size * scale) ** 2
                        aw = np.sqrt(area / ratio)
                        ah = aw * ratio
                        out.append([cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2])
    return np.asarray(out)


def test_keras_anchors_against_loop(rng):
    for h, w in [(128, 192), tuple(rng.integers(33, 300, 2))]:
        got = det.anchors_for_shape((h, w), "keras")
        ref = keras_anchors_loop(h, w)
        assert got.shape == ref.shape == (det.num_anchors((h, w)), 4)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)


def test_anchor_errors():
    with pytest.raises(ValueError, match="style expected one of"):
        det.anchors_for_shape((64, 64), "tf")


# --- IoU and box coding ----------------------------------------------------------------------------------

def iou_loop(a, b):
    out = np.zeros((len(a), len(b)))
    for i, j in itertools.product(range(len(a)), range(len(b))):
        iw = max(0.0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
        ih = max(0.0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
        area = lambda r: max(r[2] - r[0], 0) * max(r[3] - r[1], 0)
        u = area(a[i]) + area(b[j]) - iw * ih
        out[i, j] = iw * ih / u if u > 0 else 0.0
    return out


def test_box_iou_numpy_and_jax(rng):
    a, b = random_boxes(rng, 17), random_boxes(rng, 11)
    a[3, 2:] = a[3, :2]               # zero-area boxes
    b[0] = 0.0
    b[4] = a[5]                       # identical boxes
    ref = iou_loop(a, b)
    np.testing.assert_allclose(det.box_iou(a, b), ref, atol=1e-12)
    got = jax.jit(det.box_iou)(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    assert isinstance(got, jax.Array)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert ref[5, 4] == pytest.approx(1.0) and ref[3].max() == 0 and ref[:, 0].max() == 0
    grad = jax.jit(jax.grad(lambda x: det.box_iou(x, jnp.zeros((2, 4))).sum() + det.box_iou(x, x).sum()))(
        jnp.asarray(a, jnp.float32))
    assert np.isfinite(grad).all()


@pytest.mark.parametrize("style", ["keras", "torchvision"])
def test_encode_decode_exact_inverses(rng, style):
    anchors = det.anchors_for_shape((96, 160), style)
    boxes = random_boxes(rng, len(anchors), (96, 160), min_size=0.05)
    d = det.encode_boxes(anchors, boxes, style=style)
    np.testing.assert_allclose(det.decode_boxes(anchors, d, style=style), boxes, atol=1e-9)
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    if style == "keras":
        ref = np.stack([(boxes[:, 0] - anchors[:, 0]) / aw, (boxes[:, 1] - anchors[:, 1]) / ah,
                        (boxes[:, 2] - anchors[:, 2]) / aw, (boxes[:, 3] - anchors[:, 3]) / ah], 1) / 0.2
    else:
        gw, gh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        ref = np.stack([((boxes[:, 0] + boxes[:, 2]) - (anchors[:, 0] + anchors[:, 2])) / 2 / aw,
                        ((boxes[:, 1] + boxes[:, 3]) - (anchors[:, 1] + anchors[:, 3])) / 2 / ah,
                        np.log(gw / aw), np.log(gh / ah)], 1)
    np.testing.assert_allclose(d, ref, rtol=1e-9, atol=1e-9)
    aj = jnp.asarray(anchors, jnp.float32)
    dj = jax.jit(lambda a, b: det.encode_boxes(a, b, style=style))(aj, jnp.asarray(boxes, jnp.float32))
    np.testing.assert_allclose(dj, ref, rtol=1e-4, atol=1e-4)
    back = jax.jit(lambda a, d: det.decode_boxes(a, d, style=style))(aj, dj)
    np.testing.assert_allclose(back, boxes, rtol=1e-5, atol=1e-3)


def test_zero_size_boxes_give_finite_codes_and_gradients():
    anchors = jnp.asarray(det.anchors_for_shape((64, 64))[:20], jnp.float32)
    boxes = jnp.zeros((20, 4))
    for style in ("keras", "torchvision"):
        f = lambda b, style=style: det.encode_boxes(anchors, b, style=style).sum()
        value, grad = jax.jit(jax.value_and_grad(f))(boxes)
        assert np.isfinite(value) and np.isfinite(grad).all()


# --- matching and targets ------------------------------------------------------------------------------

def match_loop(anchors, gt, valid, pos_iou=0.5, neg_iou=0.4):
    """keras thresholds + torchvision low-quality matches, anchor by anchor (float64)."""
    iou = iou_loop(anchors, gt)
    iou[:, ~valid] = -1
    state = np.zeros(len(anchors), int)
    matched = np.zeros(len(anchors), int)
    for i in range(len(anchors)):
        matched[i] = int(np.argmax(iou[i]))
        best = iou[i, matched[i]]
        state[i] = 1 if best >= pos_iou else (0 if best < neg_iou else -1)
    for g in np.flatnonzero(valid):
        best = iou[:, g].max()
        if best > 0:
            state[iou[:, g] >= best * (1 - 1e-5)] = 1
    return matched, state


def test_match_anchors_against_loop(rng):
    anchors = det.anchors_for_shape((64, 96))
    gt = random_boxes(rng, 4, (64, 96), min_size=0.1)
    gt[3] = [10, 10, 14, 13]                          # tiny: only a low-quality match reaches it
    valid = np.array([True, True, False, True])
    gt[2] = 0.0                                       # padding
    m, s = jax.jit(matching.match_anchors)(jnp.asarray(anchors, jnp.float32), jnp.asarray(gt, jnp.float32),
                                           jnp.asarray(valid))
    rm, rs = match_loop(anchors, gt, valid)
    np.testing.assert_array_equal(s, rs)
    np.testing.assert_array_equal(np.asarray(m)[rs == 1], rm[rs == 1])
    assert (np.asarray(m)[rs == 1] != 2).all()
    tiny_best = iou_loop(anchors, gt[3:4])[:, 0]
    assert tiny_best.max() < 0.5 and (rs[tiny_best >= tiny_best.max() * (1 - 1e-5)] == 1).all()


def test_targets_and_loss_against_numpy(rng):
    anchors = det.anchors_for_shape((64, 96))
    A, C = len(anchors), 2
    gt = np.stack([random_boxes(rng, 3, (64, 96), min_size=0.2) for _ in range(2)]).astype(np.float32)
    valid = np.array([[True, True, False], [True, False, False]])
    gt[~valid] = 0
    labels = rng.integers(0, C, (2, 3))
    targets = jax.jit(lambda an, g, lab, v, hw: det.detection_targets(
        an, g, lab, v, C, box_style="torchvision", valid_hw=hw))
    valid_hw = jnp.asarray([[63, 95], [61, 83]], jnp.float32)      # no anchor centre on an edge
    t = targets(anchors.astype(np.float32), gt, labels, valid, valid_hw)
    logits = rng.normal(0, 2, (2, A, C)).astype(np.float32)
    deltas = rng.normal(0, 0.5, (2, A, 4)).astype(np.float32)
    total, aux = jax.jit(lambda *a: det.retinanet_loss(*a, box_loss="l1"))(logits, deltas, t)
    # NumPy float64 reference
    cls_sum = box_sum = n_pos = 0.0
    for b in range(2):
        m, s = match_loop(anchors, gt[b].astype(np.float64), valid[b])
        hw = (63, 95) if b == 0 else (61, 83)
        cx, cy = anchors[:, [0, 2]].mean(1), anchors[:, [1, 3]].mean(1)
        s[~((cx >= 0) & (cy >= 0) & (cx < hw[1]) & (cy < hw[0]))] = -1
        np.testing.assert_array_equal(t["state"][b], s)
        onehot = np.zeros((A, C))
        onehot[s == 1, labels[b][m[s == 1]]] = 1
        p = 1 / (1 + np.exp(-logits[b].astype(np.float64)))
        ce = -(onehot * np.log(p) + (1 - onehot) * np.log(1 - p))
        p_t = np.where(onehot == 1, p, 1 - p)
        fl = np.where(onehot == 1, 0.25, 0.75) * (1 - p_t) ** 2 * ce
        cls_sum += fl[s != -1].sum()
        enc = det.encode_boxes(anchors[s == 1], gt[b].astype(np.float64)[m[s == 1]], style="torchvision")
        box_sum += np.abs(deltas[b][s == 1] - enc).sum()
        n_pos += (s == 1).sum()
    assert n_pos > 0 and float(aux["num_positive"]) == n_pos
    np.testing.assert_allclose(float(aux["cls_loss"]), cls_sum / n_pos, rtol=1e-4)
    np.testing.assert_allclose(float(aux["box_loss"]), box_sum / n_pos, rtol=1e-4)
    np.testing.assert_allclose(float(total), (cls_sum + box_sum) / n_pos, rtol=1e-4)
    # Padded-only images: no positives, finite loss and gradients.
    t0 = jax.jit(lambda *a: det.detection_targets(*a, C, box_style="torchvision"))(
        anchors.astype(np.float32), np.zeros((1, 2, 4), np.float32), np.zeros((1, 2), int),
        np.zeros((1, 2), bool))
    g = jax.jit(jax.grad(lambda x, d: det.retinanet_loss(x, d, t0)[0], argnums=(0, 1)))(
        jnp.asarray(logits[:1]), jnp.asarray(deltas[:1]))
    assert all(np.isfinite(x).all() for x in g) and float(t0["state"].max()) == 0


def test_focal_loss_and_smooth_l1_against_numpy(rng):
    x = rng.normal(0, 3, (50, 3))
    t = rng.integers(0, 2, (50, 3))
    for alpha, gamma in [(0.25, 2.0), (0.5, 1.5)]:
        p = 1 / (1 + np.exp(-x))
        ref = np.where(t == 1, alpha * (1 - p) ** gamma * -np.log(p),
                       (1 - alpha) * p ** gamma * -np.log(1 - p))
        def fl(a, b, alpha=alpha, gamma=gamma):
            return det.focal_loss(a.astype(jnp.float32), b, alpha=alpha, gamma=gamma)
        got = jax.jit(fl)(
            jnp.asarray(x, jnp.bfloat16), t)
        assert got.dtype == jnp.float32 and got.shape == x.shape
        xb = np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32), np.float64)
        pb = 1 / (1 + np.exp(-xb))
        refb = np.where(t == 1, alpha * (1 - pb) ** gamma * -np.log(pb),
                        (1 - alpha) * pb ** gamma * -np.log(1 - pb))
        np.testing.assert_allclose(got, refb, rtol=1e-4, atol=1e-7)
        assert np.abs(ref - refb).max() < 0.1 * np.abs(ref).max()
    d = rng.normal(0, 0.3, 100)
    beta = 1 / 9
    bf16 = jnp.zeros((2, 3), jnp.bfloat16)
    assert jax.eval_shape(det.focal_loss, bf16, jnp.zeros((2, 3))).dtype == jnp.float32
    np.testing.assert_allclose(jax.jit(det.smooth_l1)(d), np.where(np.abs(d) < beta, 0.5 * d ** 2 / beta,
                                                          np.abs(d) - 0.5 * beta), rtol=1e-5, atol=1e-7)


# --- NMS and detections -------------------------------------------------------------------------------

def test_nms_characterisation(rng):
    boxes = random_boxes(rng, 60, (100, 100), min_size=0.2)
    boxes[10] = boxes[3]                               # exact duplicate
    scores = rng.uniform(size=60)
    labels = rng.integers(0, 3, 60)
    for thr in (0.3, 0.5):
        keep = det.batched_nms(boxes, scores, labels, thr)
        assert (np.diff(scores[keep]) <= 0).all()
        kept = set(keep.tolist())
        iou = iou_loop(boxes, boxes)
        for i in range(60):                             # kept: no higher kept box of its class overlaps
            higher = [j for j in kept if labels[j] == labels[i] and scores[j] > scores[i]]
            suppressed = any(iou[i, j] > thr for j in higher)
            assert (i in kept) == (not suppressed), i


def test_detections_from_outputs(rng):
    anchors = det.anchors_for_shape((64, 96))
    logits = rng.normal(-4, 1, (len(anchors), 2))
    logits[100, 1] = 5.0
    deltas = rng.normal(0, 0.3, (len(anchors), 4))
    out = det.detections_from_outputs(logits, deltas, anchors, box_style="keras", image_hw=(64, 96),
                                      max_detections=7)
    assert len(out["scores"]) == 7 and out["labels"][0] == 1
    np.testing.assert_allclose(out["boxes"][0], np.clip(det.decode_boxes(anchors[100], deltas[100]),
                                                         0, [96, 64, 96, 64]), rtol=1e-5)
    assert out["scores"][0] == pytest.approx(1 / (1 + np.exp(-5.0)), rel=1e-6)


# --- COCO AP --------------------------------------------------------------------------------------------

def pycocotools_stats(dets, gts):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    images, anns, res = [], [], []
    for i, (d, g) in enumerate(zip(dets, gts)):
        images.append({"id": i + 1, "width": 500, "height": 500})
        for b, lab in zip(g["boxes"], g["labels"]):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(lab),
                         "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0})
        for b, s, lab in zip(d["boxes"], d["scores"], d["labels"]):
            res.append({"image_id": i + 1, "category_id": int(lab), "score": float(s),
                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    cats = sorted({int(c) for g in gts for c in g["labels"]} | {int(c) for d in dets for c in d["labels"]})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in cats]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(res), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:3]


def test_coco_ap_equals_pycocotools(rng):
    for trial in range(3):
        gts, dets = [], []
        for _ in range(6):
            m = int(rng.integers(0, 4))
            g = random_boxes(rng, m, (300, 300), min_size=0.1)
            gts.append({"boxes": g, "labels": rng.integers(1, 4, m)})
            k = int(rng.integers(1, 12))
            d = random_boxes(rng, k, (300, 300), min_size=0.1)
            if m:                                        # some near-hits
                j = rng.integers(0, m, k // 2)
                near = g[j] + rng.normal(0, 6, (k // 2, 4))
                # valid boxes only (x1 < x2, y1 < y2): pycocotools ignores an unmatched box of negative area
                d[: k // 2] = np.concatenate([np.minimum(near[:, :2], near[:, 2:]),
                                              np.maximum(near[:, :2], near[:, 2:]) + 1], axis=1)
            scores = rng.uniform(size=k)
            if trial == 2:
                scores = np.round(scores, 1)             # ties
            labels = rng.integers(1, 4, k)
            if m:
                labels[: k // 2] = gts[-1]["labels"][j]
            dets.append({"boxes": d, "scores": scores, "labels": labels})
        ref = pycocotools_stats(dets, gts)
        got = det.coco_ap(dets, gts)
        np.testing.assert_allclose([got["AP"], got["AP50"], got["AP75"]], ref, atol=1e-12)
    assert got["AP50"] > 0


def test_coco_ap_refuses_an_inverted_box_and_names_it(rng):
    """An inverted box (x2 < x1 or y2 < y1) is an error naming the entry; a zero-width one is a box."""
    n = 4
    gts = [{"boxes": random_boxes(rng, 2, (100, 100), min_size=0.1), "labels": np.ones(2, int)}
           for _ in range(n)]
    dets = [{"boxes": random_boxes(rng, 3, (100, 100), min_size=0.1), "scores": rng.uniform(size=3),
             "labels": np.ones(3, int)} for _ in range(n)]
    i, j, axis = int(rng.integers(n)), int(rng.integers(3)), int(rng.integers(2))
    dets[i]["boxes"][j, axis + 2] = dets[i]["boxes"][j, axis]          # zero width or height: accepted
    det.coco_ap(dets, gts)
    dets[i]["boxes"][j, axis + 2] = dets[i]["boxes"][j, axis] - 1.0    # inverted
    with pytest.raises(ValueError, match=rf"detections\[{i}\]\['boxes'\]\[{j}\]"):
        det.coco_ap(dets, gts)
    dets[i]["boxes"][j, axis + 2] = dets[i]["boxes"][j, axis] + 1.0
    gts[i]["boxes"][1, axis + 2] = gts[i]["boxes"][1, axis] - 1.0
    with pytest.raises(ValueError, match=rf"ground_truth\[{i}\]\['boxes'\]\[1\]"):
        det.coco_ap(dets, gts)


# --- torchvision golden: AnchorGenerator and BoxCoder ---------------------------------------------------

def test_torchvision_anchors_and_decoding_equal_golden():
    """Odd image sizes (strides = image side // feature side), real feature maps of torchvision's backbone."""
    import pathlib
    z = np.load(pathlib.Path(__file__).parent / "golden" / "torchvision_anchors.npz")
    for h, w in z["sizes"]:
        assert [tuple(s) for s in z[f"features_{h}x{w}"]] == det.feature_shapes((h, w))
        np.testing.assert_array_equal(det.anchors_for_shape((h, w), "torchvision"), z[f"anchors_{h}x{w}"])
    anchors, codes, ref = z["decode_anchors"], z["decode_codes"], z["decode_boxes"]
    assert (codes[:, 2:] > np.log(1000 / 16)).any()               # the clamp is exercised
    np.testing.assert_allclose(det.decode_boxes(anchors.astype(np.float64), codes.astype(np.float64),
                                                style="torchvision"), ref, rtol=1e-5, atol=1e-3)
    got = jax.jit(lambda a, c: det.decode_boxes(a, c, style="torchvision"))(anchors, codes)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-3)


def test_mask_to_box_and_image_scores(rng):
    masks = np.zeros((4, 20, 30), bool)
    masks[0, 3:9, 5:6] = True
    masks[1, 0:20, 29] = True
    masks[2, 7, 11] = masks[2, 15, 2] = True
    boxes, valid = det.mask_to_box(masks)
    np.testing.assert_array_equal(boxes, [[5, 3, 6, 9], [29, 0, 30, 20], [2, 7, 12, 16], [0, 0, 0, 0]])
    np.testing.assert_array_equal(valid, [True, True, True, False])
    jb, jv = jax.jit(det.mask_to_box)(jnp.asarray(masks))
    np.testing.assert_array_equal(jb, boxes)
    np.testing.assert_array_equal(jv, valid)
    logits = rng.normal(0, 2, (3, 50, 2))
    p = 1 / (1 + np.exp(-logits))
    top = p.max(-1).argmax(-1)
    s = p.max(1)
    refs = {"top_anchor": p[np.arange(3), top, 1], "max_class": s[:, 1], "ratio": s[:, 1] / s.sum(1)}
    for rule, ref in refs.items():
        np.testing.assert_allclose(jax.jit(det.image_scores, static_argnums=1)(logits, rule), ref, rtol=1e-5)
