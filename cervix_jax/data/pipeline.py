"""From examples (docs/internals.md "Examples") to device batches (docs/internals.md "Batches").

`preprocess` turns one example into fixed-shape arrays (resize keeping the aspect ratio, optional
Gaussian blur, normalise, pad); `Loader` shuffles per epoch as a pure function of (seed, epoch),
preprocesses in background threads and yields batches shaped [devices, per_device, ...], each
process only its slice of every global batch.
"""
from __future__ import annotations

import collections
import concurrent.futures
import copy
import os
from typing import Callable, Iterator, Optional, Sequence

import chex
import jax
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from cervix_jax.data.blur import gaussian_blur

MASK_KEYS = ("cervix_mask", "os_mask", "tz_mask", "lesion_mask")
INDEX_KEYS = ("id", "label", "group", "treatability", "dysplasia")

CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
TORCH_MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float32)
TORCH_STD_RGB = np.array([0.229, 0.224, 0.225], np.float32)


def resized_shape(shape: tuple[int, int], longer: int) -> tuple[int, int]:
    """(h, w) scaled so that max(h, w) == longer, rounding the shorter side (at least 1)."""
    h, w = shape
    scale = longer / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def fitted_longer(shape: tuple[int, int], longer: int, box: tuple[int, int]) -> int:
    """The longer border to resize an image of `shape` (h, w) to: `longer`, or less when the result
    would not fit in `box` (H, W), e.g. a portrait image in a landscape pad_to (then it fills the
    height). Largest L <= longer with resized_shape(shape, L) inside box."""
    h, w = shape
    height, width = box
    fit = min(longer, int(np.floor(min(height / h, width / w) * max(h, w) + 1e-9)))
    while fit > 1:
        rh, rw = resized_shape(shape, fit)
        if rh <= height and rw <= width:
            break
        fit -= 1
    return max(1, fit)


def resize_keep_aspect(image: np.ndarray, longer: int, *, nearest: bool = False) -> np.ndarray:
    """uint8 image [H, W, 3] or mask [H, W] resized so that its longer border is `longer`.

    Bilinear with antialiasing (PIL) for images; nearest (`nearest=True`) for masks. Both use
    pixel-centre coordinates, so a mask resized with nearest stays aligned with its image.
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"resize_keep_aspect: expected uint8 [H, W] or [H, W, C], "
                         f"got {image.dtype} {image.shape}")
    h, w = resized_shape(image.shape[:2], longer)
    if (h, w) == image.shape[:2]:
        return image
    resample = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(image).resize((w, h), resample))


def pad_to(image: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pads image [h, w, ...] at the bottom and right to [H, W, ...].

    Returns (padded, valid) with valid uint8 [H, W], 1 on the original pixels.
    """
    h, w = image.shape[:2]
    height, width = shape
    if h > height or w > width:
        raise ValueError(f"pad_to: image of {h}x{w} does not fit in pad_to {height}x{width} "
                         "(config data.pad_to must hold the resized image: data.image_size is its "
                         "longer side)")
    padded = np.zeros((height, width) + image.shape[2:], image.dtype)
    padded[:h, :w] = image
    valid = np.zeros((height, width), np.uint8)
    valid[:h, :w] = 1
    return padded, valid


def normalize(image: np.ndarray, mode: str) -> np.ndarray:
    """uint8 RGB [..., 3] -> float32, as the weights in use expect.

    "unit": x / 255 (paper B). "caffe": BGR, minus the ImageNet BGR mean [103.939, 116.779, 123.68]
    (keras-retinanet, Keras ResNet50). "torch": RGB x / 255 minus mean, over std (torchvision).
    """
    if image.dtype != np.uint8 or image.shape[-1] != 3:
        raise ValueError(f"normalize: expected uint8 RGB [..., 3], got {image.dtype} {image.shape}")
    x = image.astype(np.float32)
    if mode == "unit":
        return x / 255.0
    if mode == "caffe":
        return x[..., ::-1] - CAFFE_MEAN_BGR
    if mode == "torch":
        return (x / 255.0 - TORCH_MEAN_RGB) / TORCH_STD_RGB
    raise ValueError(f"normalize: mode (config data.normalization) must be 'unit', 'caffe' or 'torch', "
                     f"got {mode!r}")


def preprocess(example: dict, *, image_size: int, pad_to: tuple[int, int], normalization: str,
               with_masks: bool = False, blur: int = 0) -> dict:
    """One example -> fixed-shape arrays for a batch.

    image float32 [H, W, 3] (resized to longer side image_size, or less where that would not fit in
    pad_to, aspect kept: a portrait image in a landscape pad_to fills its height; blurred with
    `gaussian_blur(., blur)` when blur > 1, normalised, zero-padded to pad_to = (H, W)); label, id
    int32 []; weight float32 1; valid uint8 [H, W]. With masks: the four masks uint8 [H, W] (nearest
    resize, same padding) and display uint8 [H, W, 3] (the resized, blurred RGB image as the model sees
    it, for overlays).
    """
    image = example["image"]
    chex.assert_rank(image, 3)
    if image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"preprocess: example {example.get('id')}: expected image uint8 [H, W, 3], "
                         f"got {image.dtype} {image.shape}")
    longer = fitted_longer(image.shape[:2], image_size, pad_to)
    image = resize_keep_aspect(image, longer)
    if blur > 1:
        image = np.asarray(gaussian_blur(image, blur))
    padded, valid = _pad_to(normalize(image, normalization), pad_to)
    out = {
        "image": padded,
        "label": np.int32(example["label"]),
        "id": np.int32(example["id"]),
        "weight": np.float32(1.0),
        "valid": valid,
    }
    if with_masks:
        out["display"] = _pad_to(image, pad_to)[0]
        for key in MASK_KEYS:
            if key not in example:      # in-memory data carries only a lesion mask
                continue
            mask = example[key]
            if mask.shape != example["image"].shape[:2]:
                raise ValueError(f"preprocess: example {example.get('id')}: {key} has shape {mask.shape}, "
                                 f"image has {example['image'].shape[:2]}")
            out[key] = _pad_to(resize_keep_aspect(mask, longer, nearest=True), pad_to)[0]
    return out


_pad_to = pad_to  # `preprocess` has an argument of the same name


def index_source(source, cache_path: Optional[str] = None, *, num_workers: int = 8) -> dict[str, np.ndarray]:
    """int64 arrays id, label, group, treatability, dysplasia [N], read from every example of source.

    This is what `group_split` is called with. With cache_path, a .npz there is read if it exists
    (and holds N rows) and written otherwise. Missing treatability/dysplasia keys read as -1.
    """
    if cache_path is not None and os.path.exists(cache_path):
        with np.load(cache_path) as cached:
            index = {key: cached[key] for key in INDEX_KEYS}
        if index["id"].shape[0] != len(source):
            raise ValueError(f"index_source: cache {cache_path} has {index['id'].shape[0]} rows, the source "
                             f"{len(source)}; delete the stale cache")
        return index

    def read(i: int) -> tuple:
        example = source[i]
        for key in ("id", "label", "group"):
            if key not in example:
                raise KeyError(f"index_source: example {i} has no {key!r} (keys: {sorted(example)})")
        return tuple(int(example.get(key, -1)) for key in INDEX_KEYS)

    with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
        rows = list(tqdm(pool.map(read, range(len(source))), total=len(source), desc="index", leave=False))
    table = np.array(rows, np.int64).reshape(len(rows), len(INDEX_KEYS))
    index = {key: table[:, k] for k, key in enumerate(INDEX_KEYS)}
    if cache_path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
        tmp = cache_path + ".tmp.npz"
        np.savez(tmp, **index)
        os.replace(tmp, cache_path)
    return index


class Loader:
    """Batches of `source[indices]` for a data-parallel step.

    Global batch g = global_batch_size; each of process_count processes yields its slice
    [process_index * g / P, (process_index + 1) * g / P) of every global batch, shaped
    [num_devices, g / (P * num_devices), ...]. The order of an epoch is a pure function of
    (seed, epoch), so `epoch(e, start_step=s)` resumes exactly. With drop_remainder=False the last
    global batch is completed by repeating the epoch's first example with weight 0, so every example
    appears exactly once with weight 1. Examples are read and preprocessed by num_workers threads,
    `prefetch` batches ahead.
    """

    def __init__(self, source, indices: Sequence[int], *, global_batch_size: int,
                 preprocess_fn: Callable[[dict], dict], shuffle: bool, seed: int, drop_remainder: bool,
                 num_devices: Optional[int] = None, process_index: int = 0, process_count: int = 1,
                 num_workers: int = 8, prefetch: int = 2):
        self.source = source
        self.indices = np.asarray(indices, np.int64)
        chex.assert_rank(self.indices, 1)
        self.num_devices = jax.local_device_count() if num_devices is None else num_devices
        shards = self.num_devices * process_count
        if global_batch_size % shards:
            raise ValueError(f"Loader: global batch {global_batch_size} (config train.batch_size) is not "
                             f"divisible by devices x processes = {self.num_devices} x {process_count}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"Loader: process_index {process_index} not in [0, {process_count})")
        if self.indices.size == 0 or (drop_remainder and self.indices.size < global_batch_size):
            raise ValueError(f"Loader: {self.indices.size} examples cannot fill one batch of "
                             f"{global_batch_size}")
        self.global_batch_size = global_batch_size
        self.preprocess_fn = preprocess_fn
        self.shuffle, self.seed, self.drop_remainder = shuffle, seed, drop_remainder
        self.process_index, self.process_count = process_index, process_count
        self.num_workers, self.prefetch = num_workers, prefetch

    def replace(self, **changes) -> "Loader":
        """A copy with some of shuffle, seed, drop_remainder changed (e.g. a training loader that
        yields every example once: `loader.replace(shuffle=False, drop_remainder=False)`)."""
        unknown = sorted(set(changes) - {"shuffle", "seed", "drop_remainder"})
        if unknown:
            raise TypeError(f"Loader.replace: expected shuffle, seed or drop_remainder, found {unknown}")
        out = copy.copy(self)
        for key, value in changes.items():
            setattr(out, key, value)
        return out

    def __len__(self) -> int:
        n, g = self.indices.size, self.global_batch_size
        return n // g if self.drop_remainder else -(-n // g)

    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's global batches: source indices int64 [steps, g] and weights float32 [steps, g]."""
        order = self.indices
        if self.shuffle:
            order = order[np.random.default_rng([self.seed, epoch]).permutation(order.size)]
        steps, g = len(self), self.global_batch_size
        weight = np.zeros(steps * g, np.float32)
        used = min(order.size, steps * g)
        weight[:used] = 1.0
        order = np.concatenate([order[:used], np.full(steps * g - used, order[0])])
        return order.reshape(steps, g), weight.reshape(steps, g)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[dict]:
        """Yields this process's batches of `epoch` from step `start_step` on."""
        if not 0 <= start_step <= len(self):
            raise ValueError(f"Loader.epoch: start_step {start_step} not in [0, {len(self)}]")
        order, weight = self.plan(epoch)
        per_process = self.global_batch_size // self.process_count
        mine = slice(self.process_index * per_process, (self.process_index + 1) * per_process)
        order, weight = order[start_step:, mine], weight[start_step:, mine]

        def load(i: int) -> dict:
            return self.preprocess_fn(self.source[int(i)])

        pool = concurrent.futures.ThreadPoolExecutor(self.num_workers)
        pending: collections.deque = collections.deque()
        try:
            for step in range(order.shape[0]):
                pending.append([pool.submit(load, i) for i in order[step]])
                if len(pending) > self.prefetch:
                    yield self._assemble(pending.popleft(), weight[step - self.prefetch])
            while pending:
                step = order.shape[0] - len(pending)
                yield self._assemble(pending.popleft(), weight[step])
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _assemble(self, futures: list, weight: np.ndarray) -> dict:
        examples = [f.result() for f in futures]
        batch = {key: np.stack([e[key] for e in examples]) for key in examples[0]}
        batch["weight"] = weight.astype(np.float32)  # 0 marks the padding of a last evaluation batch
        d = self.num_devices
        return {key: value.reshape((d, value.shape[0] // d) + value.shape[1:])
                for key, value in batch.items()}
