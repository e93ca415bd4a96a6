"""Preprocessing (against Keras-JAX's preprocess_input, scipy, NumPy) and the Loader (exactly-once
evaluation, resume, multi-host slices) on in-memory sources."""
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest
from keras.applications import imagenet_utils
from scipy import ndimage

from cervix_jax.data import pipeline
from cervix_jax.data.pipeline import Loader, index_source, normalize, pad_to, preprocess, resize_keep_aspect


def _example(rng, i, shape):
    """A dark noisy image with one bright rectangle that is also its lesion mask; random other masks."""
    h, w = shape
    image = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
    y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
    y1, x1 = y0 + rng.integers(h // 4, h // 2), x0 + rng.integers(w // 4, w // 2)
    lesion = np.zeros((h, w), np.uint8)
    lesion[y0:y1, x0:x1] = 1
    image[lesion == 1] = rng.integers(200, 256, (int(lesion.sum()), 3), dtype=np.uint8)
    masks = {key: (rng.random((h, w)) < 0.5).astype(np.uint8) for key in pipeline.MASK_KEYS}
    masks["lesion_mask"] = lesion
    return {"image": image, **masks, "label": np.int64(rng.integers(0, 2)), "id": np.int64(i),
            "group": np.int64(i // 3), "treatability": np.int64(rng.integers(0, 2)),
            "dysplasia": np.int64(rng.integers(0, 2)), "has_masks": np.int64(1)}


class _Source:
    """What tfds `as_data_source` offers: __len__ and __getitem__ returning example dicts."""

    def __init__(self, examples):
        self._examples = examples

    def __len__(self):
        return len(self._examples)

    def __getitem__(self, i):
        return self._examples[i]


def _source(n, seed=0, shape=None):
    rng = np.random.default_rng(seed)
    return _Source([_example(rng, i, shape or tuple(rng.integers(24, 60, 2))) for i in range(n)])


def test_normalize_matches_keras_preprocess_input():
    image = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    np.testing.assert_allclose(normalize(image, "unit"), image / 255.0, rtol=1e-6)
    for mode in ("caffe", "torch"):
        ref = imagenet_utils.preprocess_input(image.astype(np.float64), mode=mode,
                                              data_format="channels_last")
        np.testing.assert_allclose(normalize(image, mode), np.asarray(ref), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="data.normalization"):
        normalize(image, "tf")


def test_resize_keeps_aspect_and_pad_marks_valid_pixels():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (30, 45, 3), dtype=np.uint8)
    for longer, want in ((90, (60, 90)), (20, (13, 20)), (45, (30, 45))):
        assert resize_keep_aspect(image, longer).shape == want + (3,)
    assert resize_keep_aspect(image[..., 0], 90, nearest=True).shape == (60, 90)
    padded, valid = pad_to(image, (32, 50))
    np.testing.assert_array_equal(padded[:30, :45], image)
    assert padded[30:].max() == 0 and padded[:, 45:].max() == 0
    assert valid.dtype == np.uint8 and valid.sum() == 30 * 45 and valid[:30, :45].all()
    with pytest.raises(ValueError, match="data.pad_to"):
        pad_to(image, (29, 50))


@pytest.mark.parametrize("shape", [(40, 60), (57, 31), (23, 23), (300, 200)])
def test_masks_stay_aligned_with_the_image(shape):
    rng = np.random.default_rng(shape[0])
    example = _example(rng, 0, shape)
    out = preprocess(example, image_size=48, pad_to=(48, 48), normalization="unit", with_masks=True)
    h, w = pipeline.resized_shape(shape, 48)
    assert out["image"].shape == (48, 48, 3) and out["image"].dtype == np.float32
    assert out["display"].shape == (48, 48, 3) and out["display"].dtype == np.uint8
    np.testing.assert_array_equal(out["valid"][:h, :w], 1)
    assert out["valid"].sum() == h * w
    np.testing.assert_allclose(out["image"], out["display"] / np.float32(255.0))
    for key in pipeline.MASK_KEYS:
        assert out[key].shape == (48, 48) and out[key].dtype == np.uint8
        assert out[key][h:].max(initial=0) == 0 and out[key][:, w:].max(initial=0) == 0
    bright = out["display"].min(-1) >= 150  # where the rectangle landed in the resized image
    lesion = out["lesion_mask"] == 1
    iou = (bright & lesion).sum() / (bright | lesion).sum()
    assert iou > 0.8, iou
    # And the mask is where the rectangle maps under the scale factor (independent geometry).
    ys, xs = np.nonzero(example["lesion_mask"])
    sy, sx = h / shape[0], w / shape[1]
    expected = np.zeros((48, 48), bool)
    expected[int(round(ys.min() * sy)):int(round((ys.max() + 1) * sy)),
             int(round(xs.min() * sx)):int(round((xs.max() + 1) * sx))] = True
    assert (expected ^ lesion).sum() <= 0.1 * expected.sum(), ((expected ^ lesion).sum(), expected.sum())
    assert out["label"].dtype == np.int32 and out["id"].dtype == np.int32 and out["weight"] == 1


def test_preprocess_blur_and_caffe():
    example = _example(np.random.default_rng(2), 5, (30, 40))
    out = preprocess(example, image_size=40, pad_to=(32, 40), normalization="caffe", blur=19,
                     with_masks=True)
    sigma = 0.3 * ((19 - 1) * 0.5 - 1) + 0.8
    ref = ndimage.gaussian_filter(example["image"].astype(np.float64), (sigma, sigma, 0), mode="mirror",
                                  radius=(9, 9, 0))
    assert np.abs(out["display"][:30].astype(int) - np.round(ref)).max() <= 1
    assert out["display"][30:].max() == 0
    bgr = out["display"][:30, :, ::-1].astype(np.float32) - pipeline.CAFFE_MEAN_BGR
    np.testing.assert_allclose(out["image"][:30], bgr, atol=1e-4)
    assert out["image"][30:].max() == 0


def _cheap_preprocess(example):
    image = example["image"][:4, :5].astype(np.float32)
    return {"image": image, "label": np.int32(example["label"]), "id": np.int32(example["id"]),
            "weight": np.float32(1)}


def test_evaluation_scores_every_example_exactly_once():
    source = _source(23, shape=(6, 6))
    indices = np.random.default_rng(3).permutation(40)[:17] % 23
    indices = np.unique(indices)
    loader = Loader(source, indices, global_batch_size=8, preprocess_fn=_cheap_preprocess, shuffle=False,
                    seed=0, drop_remainder=False, num_devices=2, num_workers=2)
    batches = list(loader.epoch(0))
    assert len(batches) == len(loader) == -(-indices.size // 8)
    for b in batches:
        assert b["image"].shape == (2, 4, 4, 5, 3) and b["image"].dtype == np.float32
        assert b["label"].shape == (2, 4) and b["label"].dtype == np.int32
        assert b["id"].dtype == np.int32 and b["weight"].dtype == np.float32
    ids = np.concatenate([b["id"].reshape(-1) for b in batches])
    weight = np.concatenate([b["weight"].reshape(-1) for b in batches])
    np.testing.assert_array_equal(np.sort(ids[weight == 1]), indices)  # ids = source positions here
    assert (weight == 0).sum() == len(loader) * 8 - indices.size
    np.testing.assert_array_equal(ids[: indices.size], indices)  # unshuffled order kept
    labels = np.concatenate([b["label"].reshape(-1) for b in batches])
    np.testing.assert_array_equal(labels[weight == 1], [source[i]["label"] for i in ids[weight == 1]])


def test_shuffle_is_a_function_of_seed_and_epoch_and_resume_is_exact():
    source = _source(30, seed=1, shape=(6, 6))
    make = lambda seed: Loader(source, np.arange(30), global_batch_size=4, preprocess_fn=_cheap_preprocess,
                               shuffle=True, seed=seed, drop_remainder=True, num_devices=1, num_workers=3)
    loader = make(5)
    assert len(loader) == 7
    full = list(loader.epoch(2))
    ids = np.concatenate([b["id"].reshape(-1) for b in full])
    assert np.unique(ids).size == 28 and (np.concatenate([b["weight"] for b in full]) == 1).all()
    resumed = list(make(5).epoch(2, start_step=3))  # a fresh loader, as after a restart
    assert len(resumed) == 4
    for a, b in zip(full[3:], resumed):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    other_epoch = np.concatenate([b["id"].reshape(-1) for b in loader.epoch(3)])
    other_seed = np.concatenate([b["id"].reshape(-1) for b in make(6).epoch(2)])
    assert not np.array_equal(ids, other_epoch) and not np.array_equal(ids, other_seed)
    again = np.concatenate([b["id"].reshape(-1) for b in loader.epoch(2)])
    np.testing.assert_array_equal(ids, again)
    expected = np.random.default_rng([5, 2]).permutation(30)[:28]  # documented rule
    np.testing.assert_array_equal(ids, expected)


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_process_slices_concatenate_to_the_single_process_batch(drop_remainder):
    source = _source(19, seed=2, shape=(6, 6))
    kwargs = dict(global_batch_size=8, preprocess_fn=_cheap_preprocess, shuffle=True, seed=3,
                  drop_remainder=drop_remainder, num_devices=2, num_workers=2)
    single = list(Loader(source, np.arange(19), **kwargs).epoch(1))
    parts = [list(Loader(source, np.arange(19), process_index=p, process_count=2, **kwargs).epoch(1))
             for p in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(single)
    for step, whole in enumerate(single):
        for key in whole:
            assert parts[0][step][key].shape[:2] == (2, 2)
            flat = [part[step][key].reshape((-1,) + whole[key].shape[2:]) for part in parts]
            np.testing.assert_array_equal(np.concatenate(flat),
                                          whole[key].reshape((-1,) + whole[key].shape[2:]))


def test_loader_with_preprocess_and_masks_gives_the_documented_batch():
    source = _source(6, seed=4)
    fn = lambda e: preprocess(e, image_size=32, pad_to=(32, 32), normalization="torch", with_masks=True)
    batch = next(Loader(source, np.arange(6), global_batch_size=4, preprocess_fn=fn, shuffle=False, seed=0,
                        drop_remainder=False, num_devices=1).epoch(0))
    assert batch["image"].shape == (1, 4, 32, 32, 3) and batch["image"].dtype == np.float32
    for key in pipeline.MASK_KEYS + ("valid",):
        assert batch[key].shape == (1, 4, 32, 32) and batch[key].dtype == np.uint8
    assert batch["display"].shape == (1, 4, 32, 32, 3) and batch["display"].dtype == np.uint8
    np.testing.assert_array_equal(batch["id"][0], np.arange(4))


def test_loader_errors():
    source = _source(5, shape=(6, 6))
    with pytest.raises(ValueError, match="not divisible by devices x processes"):
        Loader(source, np.arange(5), global_batch_size=6, preprocess_fn=_cheap_preprocess, shuffle=False,
               seed=0, drop_remainder=False, num_devices=4)
    with pytest.raises(ValueError, match="cannot fill one batch"):
        Loader(source, np.arange(5), global_batch_size=8, preprocess_fn=_cheap_preprocess, shuffle=False,
               seed=0, drop_remainder=True, num_devices=1)


def test_index_source_reads_every_example_and_caches(tmp_path):
    source = _source(11, seed=5, shape=(6, 6))
    index = index_source(source)
    for key in pipeline.INDEX_KEYS:
        np.testing.assert_array_equal(index[key], [int(source[i][key]) for i in range(11)])
        assert index[key].dtype == np.int64
    path = str(tmp_path / "index.npz")
    index_source(source, path)
    cached = index_source(source, path)
    for key in pipeline.INDEX_KEYS:
        np.testing.assert_array_equal(cached[key], index[key])
    with pytest.raises(ValueError, match="stale cache"):
        index_source(_source(4, shape=(6, 6)), path)
    bare = _Source([{"id": np.int64(i), "label": np.int64(1), "group": np.int64(0)} for i in range(3)])
    assert index_source(bare)["dysplasia"].tolist() == [-1, -1, -1]
