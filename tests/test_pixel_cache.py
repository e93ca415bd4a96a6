"""The uint8 pixel cache reproduces what the pipeline makes from the source, exactly."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from cervix_jax.data import pipeline, pixel_cache


class _Source:
    def __init__(self, examples):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[int(i)]


def _examples(rng, n, masks=True):
    out = []
    for i in range(n):
        h, w = int(rng.integers(20, 60)), int(rng.integers(30, 90))
        e = {
            "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
            "label": int(rng.integers(0, 2)),
            "id": 100 + i,
            "group": i // 2,
            "treatability": int(rng.integers(0, 2)),
            "dysplasia": -1,
        }
        if masks:
            e.update({k: (rng.random((h, w)) < 0.3).astype(np.uint8) for k in pipeline.MASK_KEYS})
        out.append(e)
    return out


@pytest.mark.parametrize("with_masks", [True, False])
def test_cache_equals_preprocess_of_source(tmp_path, rng, with_masks):
    source = _Source(_examples(rng, 7, masks=with_masks))
    size, pad = 40, (40, 40)
    cache = pixel_cache.open_or_build(
        source, tmp_path, "synthetic_cervix/tiny", image_size=size, pad_to=pad, num_workers=2
    )
    assert (
        len(cache) == len(source) and cache.pixels.dtype == np.uint8 and cache.pixels.shape == (7, 40, 40, 3)
    )
    for blur in (0, 3):
        fn = functools.partial(
            pipeline.preprocess,
            image_size=size,
            pad_to=pad,
            normalization="caffe",
            with_masks=with_masks,
            blur=blur,
        )
        for i in rng.permutation(len(source)):
            want, got = fn(source[i]), fn(cache[i])
            assert set(want) == set(got)
            for k in want:
                np.testing.assert_array_equal(got[k], want[k], err_msg=f"example {i} key {k} blur {blur}")
    assert pipeline.index_source(cache)["treatability"].tolist() == [
        e["treatability"] for e in source.examples
    ]
    again = pixel_cache.open_or_build(source, tmp_path, "synthetic_cervix/tiny", image_size=size, pad_to=pad)
    assert again.directory == cache.directory and (again.directory / "meta.json").exists()


def test_cache_rejects_an_image_that_does_not_fit(tmp_path, rng):
    source = _Source(_examples(rng, 2, masks=False))
    with pytest.raises(ValueError, match="does not fit data.pad_to"):
        pixel_cache.build(source, tmp_path / "c", image_size=64, pad_to=(16, 64))
