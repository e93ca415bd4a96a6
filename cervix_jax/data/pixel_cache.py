"""A pre-resized uint8 pixel cache of a source, memory-mapped, so that training reads decoded pixels.

A tfds source decodes a PNG and the pipeline resizes it on every read (about 15-40 ms per 1200 x 800
image on one core); the cache does both once. `build(source, directory, image_size=, pad_to=)` writes

    directory/pixels.npy   uint8 [N, H, W, 3]    each example resized by `pipeline.resize_keep_aspect`
                                                 to `image_size`, top-left aligned, zeros elsewhere
    directory/masks.npy    uint8 [N, 4, H, W]    the four masks (nearest), when the source has them
    directory/index.npz    hw [N, 2] (resized size), id, label, group, treatability, dysplasia [N]
    directory/meta.json    n, image_size, pad_to, masks, version

(H, W) = pad_to. `PixelCache` (what `build`/`open_or_build` return) is a random-access source: item i
is {"image": [h, w, 3] view of the memory map, the masks likewise, the scalar keys}. Its images are
already at `image_size`, so `pipeline.preprocess` skips the resize, and
`preprocess(cache[i]) == preprocess(source[i])` exactly (tested), blur and masks included.
`config.data.pixel_cache = DIR` makes the training loop use `open_or_build` under DIR (one
sub-folder per data name, image size and pad_to). Single host: build it before a multi-process run.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cervix_jax.data import pipeline

VERSION = 1
SCALAR_KEYS = ("id", "label", "group", "treatability", "dysplasia")


class PixelCache:
    """Random access to a cache folder written by `build` (read-only memory maps)."""

    def __init__(self, directory):
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(
                f"pixel cache: expected {meta_path} (written by pixel_cache.build), found no such file"
            )
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("version") != VERSION:
            raise ValueError(
                f"pixel cache {self.directory}: version {self.meta.get('version')}, expected "
                f"{VERSION}; delete the folder to rebuild it"
            )
        self.pixels = np.load(self.directory / "pixels.npy", mmap_mode="r")
        self.masks = np.load(self.directory / "masks.npy", mmap_mode="r") if self.meta["masks"] else None
        with np.load(self.directory / "index.npz") as index:
            self.index = {k: index[k] for k in index.files}

    def __len__(self) -> int:
        return int(self.meta["n"])

    def __getitem__(self, i) -> dict:
        i = int(i)
        h, w = self.index["hw"][i]
        out = {"image": self.pixels[i, :h, :w]}
        out.update({k: self.index[k][i] for k in SCALAR_KEYS})
        if self.masks is not None:
            for k, key in enumerate(pipeline.MASK_KEYS):
                out[key] = self.masks[i, k, :h, :w]
        return out

    def close(self) -> None:
        """Drops the memory maps (the files stay)."""
        self.pixels = self.masks = None


def build(source, directory, *, image_size: int, pad_to: tuple[int, int], num_workers: int = 8) -> PixelCache:
    """Writes the cache of every example of `source` to `directory` (replacing it) and opens it."""
    directory = Path(directory)
    n = len(source)
    if n == 0:
        raise ValueError("pixel cache: the source is empty")
    height, width = pad_to
    first = source[0]
    with_masks = all(k in first for k in pipeline.MASK_KEYS)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pixels = np.lib.format.open_memmap(tmp / "pixels.npy", "w+", np.uint8, (n, height, width, 3))
    masks = (
        np.lib.format.open_memmap(
            tmp / "masks.npy", "w+", np.uint8, (n, len(pipeline.MASK_KEYS), height, width)
        )
        if with_masks
        else None
    )
    hw = np.zeros((n, 2), np.int64)
    scalars = {k: np.full(n, -1, np.int64) for k in SCALAR_KEYS}

    def write(i: int) -> None:
        example = first if i == 0 else source[i]
        image = pipeline.resize_keep_aspect(np.asarray(example["image"]), image_size)
        h, w = image.shape[:2]
        if h > height or w > width:
            raise ValueError(
                f"pixel cache: example {i} resized to {h}x{w} does not fit data.pad_to "
                f"{height}x{width} (data.image_size {image_size} is the longer side)"
            )
        pixels[i, :h, :w] = image
        hw[i] = h, w
        for k in SCALAR_KEYS:
            if k in example:
                scalars[k][i] = int(example[k])
        if masks is not None:
            for k, key in enumerate(pipeline.MASK_KEYS):
                masks[i, k, :h, :w] = pipeline.resize_keep_aspect(
                    np.asarray(example[key]), image_size, nearest=True
                )

    with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
        for _ in tqdm(pool.map(write, range(n)), total=n, desc="pixel cache", leave=False, disable=None):
            pass
    pixels.flush()
    if masks is not None:
        masks.flush()
    np.savez(tmp / "index.npz", hw=hw, **scalars)
    (tmp / "meta.json").write_text(
        json.dumps(
            {
                "n": n,
                "image_size": image_size,
                "pad_to": list(pad_to),
                "masks": with_masks,
                "version": VERSION,
            }
        )
    )
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    return PixelCache(directory)


def cache_dir(root, data_name: str, image_size: int, pad_to: tuple[int, int]) -> Path:
    """root/<data name>-<image size>-<H>x<W>: one folder per dataset and geometry."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", data_name).strip("_")
    return Path(os.path.expanduser(str(root))) / f"{slug}-{image_size}-{pad_to[0]}x{pad_to[1]}"


def open_or_build(
    source, root, data_name: str, *, image_size: int, pad_to: tuple[int, int], num_workers: int = 8
) -> PixelCache:
    """The cache of `source` under `cache_dir(root, ...)`: opened if it exists for len(source) examples,
    built otherwise."""
    directory = cache_dir(root, data_name, image_size, pad_to)
    if (directory / "meta.json").exists():
        cache = PixelCache(directory)
        if (
            len(cache) == len(source)
            and cache.meta["image_size"] == image_size
            and tuple(cache.meta["pad_to"]) == tuple(pad_to)
        ):
            return cache
        cache.close()
        print(
            f"pixel cache {directory}: stale ({len(cache)} examples, source {len(source)}); rebuilding",
            flush=True,
        )
    return build(source, directory, image_size=image_size, pad_to=pad_to, num_workers=num_workers)
