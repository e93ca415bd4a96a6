"""The data a run trains and evaluates on, built from `config.data` (the engine's only data entry).

Every dataset, tfds or in-memory `memory/<n>`, is a random-access source (`data.builders.load_source`)
split by group with `data.split.group_split` and batched by `data.pipeline.Loader`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import numpy as np

from cervix_jax.data import builders, memory, pipeline, split as split_lib


@dataclasses.dataclass
class Data:
    """What the engine needs of a dataset. `train` yields shuffled full batches; `eval[split]`
    yields every example of the split once, last batch padded with weight 0. `examples(split, n)`
    gives the first n examples of a split as per-example dicts (image, display, label, id, masks)."""

    train: Any
    eval: dict
    num_examples: int
    image_shape: tuple[int, int, int]
    examples: Callable[[str, int], list]


def open_source(data_config):
    """(random-access source, index) of config.data: index = int64 arrays id, label, group, ... [N]
    (`pipeline.index_source`), with `label` taken from `data.label` when that is another label set."""
    dc = data_config
    source, _ = builders.load_source(dc)
    if dc.get("pixel_cache", ""):   # decoded, resized pixels from a memory map (docs/performance.md)
        from cervix_jax.data import pixel_cache
        source = pixel_cache.open_or_build(source, dc.pixel_cache, dc.name, image_size=dc.image_size,
                                           pad_to=tuple(dc.pad_to))
    index = pipeline.index_source(source)
    if dc.label != "label":  # train on another label set the examples carry (synthetic data has both)
        values = np.asarray(index[dc.label])
        if (values < 0).any():
            raise ValueError(f"config.data.label={dc.label!r}: {int((values < 0).sum())} of {len(values)} "
                             f"examples of {dc.name} have no {dc.label!r} label; use 'label'")
        source, index = _Relabeled(source, dc.label), {**index, "label": values}
    return source, index


def make_data(config, *, num_devices: int, process_index: int, process_count: int) -> Data:
    """The train / val / test loaders of `config.data` for this process."""
    dc, batch = config.data, config.train.batch_size
    common = dict(global_batch_size=batch, num_devices=num_devices, process_index=process_index,
                  process_count=process_count)
    source, index = open_source(dc)
    parts = split_lib.group_split(np.asarray(index["label"]), np.asarray(index["group"]),
                                  test_fraction=dc.test_fraction, val_fraction=dc.val_fraction,
                                  seed=dc.split_seed)
    # memory/<n> images are generated at pad_to (see cervix_jax/data/memory.py).
    image_size = max(dc.pad_to) if memory.is_memory(dc.name) else dc.image_size

    # Paper B's degradation: test images only are blurred (data.blur), on the resized uint8 image
    # before normalisation and padding, as OpenCV would; train and val (threshold choice) stay clean.
    def pre_for(split, *, with_masks=dc.with_masks):
        return functools.partial(pipeline.preprocess, image_size=image_size, pad_to=tuple(dc.pad_to),
                                 normalization=dc.normalization, with_masks=with_masks,
                                 blur=dc.blur if split == "test" else 0)

    def examples(split, n):
        pre = pre_for(split, with_masks=True)
        out = []
        for i in parts[split][:n]:
            ex = pre(source[int(i)])
            item = {k: v for k, v in ex.items() if k.endswith("_mask")}
            item.update(image=ex["image"], display=ex["display"], label=int(ex["label"]), id=int(ex["id"]),
                        valid=ex["valid"])
            out.append(item)
        return out

    return Data(train=pipeline.Loader(source, parts["train"], preprocess_fn=pre_for("train"), shuffle=True,
                                      seed=config.seed, drop_remainder=True, **common),
                eval={s: pipeline.Loader(source, parts[s], preprocess_fn=pre_for(s), shuffle=False, seed=0,
                                         drop_remainder=False, **common) for s in ("val", "test")},
                num_examples=len(source), image_shape=(*dc.pad_to, 3), examples=examples)


class _Relabeled:
    """A random-access source whose examples' `label` is their `key` field."""

    def __init__(self, source, key: str):
        self.source, self.key = source, key

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i):
        example = self.source[i]
        return {**example, "label": example[self.key]}


def local_data(config) -> Data:
    """`make_data` for this process's devices."""
    return make_data(config, num_devices=jax.local_device_count(), process_index=jax.process_index(),
                     process_count=jax.process_count())


def groups_by_id(data_config) -> dict[int, int]:
    """Example id -> group (woman/session) of config.data, for bootstrap resampling by group."""
    _, index = open_source(data_config)
    return dict(zip(np.asarray(index["id"]).tolist(), np.asarray(index["group"]).tolist()))
