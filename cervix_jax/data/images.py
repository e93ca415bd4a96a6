"""Robust reading of users' images and discovery of their folders / CSV manifests.

Every file gets a clear outcome and nothing is silently lost: an image is either read (converted
to RGB uint8 where needed, with a note saying how) or skipped with a reason. Conversions:

- grayscale (L), bilevel (1) and palette (P) -> RGB by repeating / looking up the values;
- RGBA / LA / PA -> RGB by dropping the alpha channel (no compositing);
- 16-bit (I;16*, I) -> 8-bit by round(v / 257) (65535 -> 255), then RGB;
- CMYK -> RGB with Pillow's rule R = (255 - C) * (255 - K) / 255 (same for G/M, B/Y);
- EXIF orientation applied (the array is as a viewer shows the photo);
- longer border above `max_side` -> downscaled with aspect kept by area averaging (PIL BOX).

Skipped: unreadable or truncated files, non-images with image extensions, unsupported modes,
images whose shorter side is below `min_side`.
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp")
MANIFEST_NAME = "manifest.csv"
_EXIF_ORIENTATION = 0x0112


@dataclasses.dataclass
class ReadResult:
    """`image` uint8 [H, W, 3] or None (then `error` says why); `notes` lists conversions done."""
    path: str
    image: Optional[np.ndarray]
    notes: list[str]
    error: Optional[str] = None


def read_image(path, *, max_side: int = 1200, min_side: int = 32) -> ReadResult:
    """Reads one image file as RGB uint8 [H, W, 3]; never raises for a bad file."""
    path = str(path)
    notes: list[str] = []
    try:
        with Image.open(path) as img:
            w, h = img.size
            if img.format == "JPEG" and max(w, h) > 2 * max_side:
                scale = max_side / max(w, h)  # DCT-domain reduction by 2/4/8, still >= target size
                img.draft(img.mode, (int(np.ceil(w * scale)), int(np.ceil(h * scale))))
            img.load()
            if min(w, h) < min_side:
                return ReadResult(path, None, notes, f"too small: {w}x{h} (WxH), shorter side < min_side={min_side}")
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            if orientation not in (1, None):
                img = ImageOps.exif_transpose(img)
                notes.append(f"EXIF orientation {orientation} applied")
            rgb = _to_rgb(img, notes)
    except UnidentifiedImageError:
        return ReadResult(path, None, notes, "not an image: Pillow cannot identify the file format")
    except Image.DecompressionBombError as e:
        return ReadResult(path, None, notes, f"too large to decode safely: {e}")
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        return ReadResult(path, None, notes, f"unreadable (truncated or corrupt): {type(e).__name__}: {e}")
    if rgb is None:
        return ReadResult(path, None, notes, notes.pop())
    h, w = rgb.shape[:2]
    if max(h, w) > max_side:
        size = _downscaled_size(w, h, max_side)
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BOX))
        notes.append(f"downscaled from {w}x{h} to {size[0]}x{size[1]} (WxH)")
    return ReadResult(path, np.ascontiguousarray(rgb, dtype=np.uint8), notes)


def _downscaled_size(w: int, h: int, max_side: int) -> tuple[int, int]:
    """(W, H) with the longer border = max_side and the aspect ratio kept (rounded, >= 1)."""
    s = max_side / max(w, h)
    return max(1, int(round(w * s))), max(1, int(round(h * s)))


def _to_rgb(img: Image.Image, notes: list[str]) -> Optional[np.ndarray]:
    """RGB uint8 array of a loaded PIL image; None (reason appended to notes) if unsupported."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        v = np.asarray(img).astype(np.float64)
        g = np.round(np.clip(v, 0, 65535) / 257.0).astype(np.uint8)
        notes.append(f"16-bit ({mode}) -> 8-bit RGB")
        return np.repeat(g[..., None], 3, axis=-1)
    if mode in ("L", "1"):
        notes.append(f"grayscale ({mode}) -> RGB")
        return np.repeat(np.asarray(img.convert("L"))[..., None], 3, axis=-1)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        notes.append(f"alpha channel dropped ({mode} -> RGB)")
        return np.asarray(img.convert("RGB"))
    if mode in ("P", "CMYK", "YCbCr", "LAB", "HSV"):
        notes.append(f"{mode} -> RGB")
        return np.asarray(img.convert("RGB"))
    notes.append(f"unsupported image mode {mode!r}")
    return None


# ----------------------------------------------------------------------------------------------
# Discovery: which files, which labels, which groups.

@dataclasses.dataclass
class Item:
    """One image to read: path, mapped label (0/1) and group key (a string)."""
    path: str
    label: int
    group: str


def _is_image_name(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def discover(manual_dir, label_map: dict[str, int]) -> tuple[str, list[Item], list[dict]]:
    """Finds the images of a user folder. Returns (layout, items, problems).

    layout: "manifest" when `manual_dir` is a CSV file or holds `manifest.csv`, else
    "class_folders" (`manual_dir/<class>/**/*.<image ext>`). problems: [{"path", "reason"}] for
    every file that will not be read (missing, unlisted, unmapped label, not in a class folder...).
    Paths are sorted, so ids are deterministic.
    """
    root = Path(manual_dir).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"cervix_folder: manual_dir {root} does not exist")
    if root.is_file() or (root / MANIFEST_NAME).is_file():
        csv_path = root if root.is_file() else root / MANIFEST_NAME
        items, problems = _discover_manifest(csv_path, label_map)
        return "manifest", items, problems
    items, problems = _discover_class_folders(root, label_map)
    return "class_folders", items, problems


def _discover_class_folders(root: Path, label_map):
    items, problems = [], []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file():
            problems.append({"path": str(p), "reason": "not in a class folder (expected FOLDER/<class>/<image>)"})
            continue
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            if not _is_image_name(f):
                problems.append({"path": str(f), "reason": f"extension {f.suffix!r} not one of {IMAGE_EXTENSIONS}"})
            elif p.name not in label_map:
                problems.append({"path": str(f), "reason": f"class {p.name!r} not in the label mapping "
                                                           f"{sorted(label_map)}"})
            else:
                items.append(Item(str(f), int(label_map[p.name]), str(f.relative_to(root))))
    return items, problems


def _discover_manifest(csv_path: Path, label_map):
    base = csv_path.parent
    items, problems, listed = [], [], set()
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        if "path" not in fields or "label" not in fields:
            raise ValueError(f"cervix_folder: {csv_path} must have a header with columns path,label[,group]; "
                             f"found {fields}")
        for line, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            rel, label = row.get("path", ""), row.get("label", "")
            where = f"{csv_path}:{line}"
            if not rel:
                problems.append({"path": where, "reason": "manifest row without a path"})
                continue
            f = (base / rel).resolve()
            if f in listed:
                problems.append({"path": str(f), "reason": f"listed twice in the manifest (again at {where})"})
                continue
            listed.add(f)
            if not f.is_file():
                problems.append({"path": str(f), "reason": f"listed in the manifest ({where}) but missing"})
            elif label not in label_map:
                problems.append({"path": str(f), "reason": f"label {label!r} ({where}) not in the label mapping "
                                                           f"{sorted(label_map)}"})
            else:
                items.append(Item(str(f), int(label_map[label]), row.get("group") or rel))
    for f in sorted(q for q in base.rglob("*") if q.is_file() and _is_image_name(q)):
        if f.resolve() not in listed:
            problems.append({"path": str(f), "reason": f"image file not listed in the manifest {csv_path}"})
    return items, problems
