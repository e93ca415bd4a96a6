"""`memory/<n>`: n procedural images built in memory, never written to disk (tests and smoke runs).

Noise images; class 1 (about 40%) has a bright square, also given as its `lesion_mask`. Groups are
pairs of ids. The images are generated at `data.pad_to`, so `data.image_size` is not used for them.
`source(data_config)` is a random-access source like a tfds one, read through the same
`pipeline.Loader` and split by the same `split.group_split`.
"""
from __future__ import annotations

import numpy as np

PREFIX = "memory/"


def is_memory(name: str) -> bool:
    return name.startswith(PREFIX)


def memory_examples(num_examples: int, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """n examples as arrays: image uint8 [n,H,W,3], label, group, id int64 [n], lesion_mask."""
    rng = np.random.default_rng(20240601)
    h, w = shape
    image = rng.integers(0, 120, (num_examples, h, w, 3)).astype(np.uint8)
    label = (rng.random(num_examples) < 0.4).astype(np.int64)
    mask = np.zeros((num_examples, h, w), np.uint8)
    s = max(h // 4, 2)
    for i in np.flatnonzero(label):
        y, x = rng.integers(0, h - s), rng.integers(0, w - s)
        image[i, y:y + s, x:x + s] = 230
        mask[i, y:y + s, x:x + s] = 1
    ids = np.arange(num_examples, dtype=np.int64)
    return {"image": image, "label": label, "group": ids // 2, "id": ids, "lesion_mask": mask}


class MemorySource:
    """Random access to `memory_examples`: source[i] = {"image", "label", "group", "id", "lesion_mask"}."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays["id"])

    def __getitem__(self, i: int) -> dict:
        return {k: v[int(i)] for k, v in self.arrays.items()}


def source(data_config) -> MemorySource:
    """The source of `data_config.name = "memory/<n>"`, images of shape `data_config.pad_to`."""
    name = data_config.name
    try:
        n = int(name[len(PREFIX):])
    except ValueError:
        raise ValueError(f"config.data.name: expected 'memory/<number of examples>', "
                         f"found {name!r}") from None
    return MemorySource(memory_examples(n, tuple(data_config.pad_to)))
