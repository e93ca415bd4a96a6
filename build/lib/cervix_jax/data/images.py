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
import hashlib
import io
import json
import os
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
            # min_side applies to the image as written, i.e. after the max_side downscale (a 20000x40
            # sliver would otherwise be kept as 1200x2); checked before decoding.
            fw, fh = _downscaled_size(w, h, max_side) if max(w, h) > max_side else (w, h)
            if min(fw, fh) < min_side:
                after = f", {fw}x{fh} after downscaling to max_side={max_side}" if (fw, fh) != (w, h) else ""
                return ReadResult(path, None, notes, f"too small: {w}x{h} (WxH){after}; shorter side "
                                                     f"< min_side={min_side}")
            if img.format == "JPEG" and max(w, h) > 2 * max_side:
                scale = max_side / max(w, h)  # DCT-domain reduction by 2/4/8, still >= target size
                img.draft(img.mode, (int(np.ceil(w * scale)), int(np.ceil(h * scale))))
            img.load()
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            if orientation not in (1, None):
                img = ImageOps.exif_transpose(img)
                notes.append(f"EXIF orientation {orientation} applied")
            rgb = _to_rgb(img, notes)
    except UnidentifiedImageError:
        return ReadResult(path, None, notes, "not an image: Pillow cannot identify the file format")
    except Image.DecompressionBombError as e:
        return ReadResult(path, None, notes, f"too large to decode safely: {e}")
    except PermissionError as e:
        return ReadResult(path, None, notes,
                          f"cannot be opened (permissions): {type(e).__name__}: {e.strerror}")
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

# Class names recognised under the ImageFolder convention (compared lower-case, with "-" and " "
# read as "_"): paper B's treatability classes and paper A's normal / abnormal.
KNOWN_CLASSES = {
    frozenset({"treatable", "not_treatable"}): ({"treatable": 0, "not_treatable": 1}, "treatability",
                                                "paper B's classes: treatable -> 0, not_treatable -> 1"),
    frozenset({"normal", "abnormal"}): ({"normal": 0, "abnormal": 1}, "dysplasia",
                                        "paper A's classes: normal -> 0, abnormal -> 1"),
}


@dataclasses.dataclass
class Item:
    """One image to read: path, mapped label (0/1) and group key (a string)."""
    path: str
    label: int
    group: str


@dataclasses.dataclass
class Discovery:
    """What `discover` found. `label_map` is the mapping used (given, or chosen by the ImageFolder
    convention, see `imagefolder_mapping`), `label_rule` says how; `label_kind` is "treatability" /
    "dysplasia" when the class names say so, else None. `classes`: class folder or manifest label ->
    number of files. `inputs`: what the build depends on (hash of the manifest bytes, hash and count
    of every file's path, size and mtime), compared by `prepare` to detect a stale build."""
    layout: str
    source: str
    items: list[Item]
    problems: list[dict]
    label_map: dict[str, int]
    label_rule: str
    label_kind: Optional[str]
    classes: dict[str, int]
    inputs: dict
    manifest_encoding: Optional[str] = None


def _is_image_name(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def printable(text) -> str:
    """`text` with any undecodable file-name bytes (surrogate escapes) shown as \\xNN, so that printing
    it never fails, even on a strict UTF-8 stdout."""
    text = str(text)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _norm_class(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def imagefolder_mapping(names) -> tuple[dict[str, int], Optional[str], str]:
    """The ImageFolder convention (torchvision, Keras, tfds): sorted class names -> 0, 1. Paper B's
    `treatable` / `not_treatable` and paper A's `normal` / `abnormal` are recognised (1 = not treatable /
    abnormal) and also fill that label key. Returns (mapping, label_kind or None, rule)."""
    names = sorted(names)
    if len(names) != 2:
        raise ValueError(f"cervix_folder (ImageFolder convention): the models here are binary, so "
                         f"exactly 2 classes are needed; found {len(names)}: "
                         f"{[printable(n) for n in names]}. "
                         "Remove the extra ones or give a mapping (--label_map NAME=0|1,... or config "
                         "mobileodt_treatability / mobileodt_type3)")
    known = KNOWN_CLASSES.get(frozenset(_norm_class(n) for n in names))
    if known is not None:
        mapping, kind, rule = known
        return {n: mapping[_norm_class(n)] for n in names}, kind, rule
    return {n: i for i, n in enumerate(names)}, None, "ImageFolder convention: sorted class names -> 0, 1"


def discover(manual_dir, label_map: Optional[dict[str, int]] = None) -> Discovery:
    """Finds the images of a user folder.

    layout "manifest" when `manual_dir` is a CSV file or holds `manifest.csv`, else "class_folders"
    (`manual_dir/<class>/**/*.<image ext>`). label_map None -> the ImageFolder convention
    (`imagefolder_mapping`). problems: [{"path", "reason"}] for every file that will not be read
    (missing, unlisted, unmapped label, not in a class folder, dangling link, unreadable folder...).
    Paths are sorted, so ids are deterministic. Raises ValueError, naming what was found and what
    mapping was expected, when no image matches the mapping.
    """
    root = Path(manual_dir).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"cervix_folder: manual_dir {root} does not exist")
    if root.is_file() or (root / MANIFEST_NAME).is_file():
        csv_path = root if root.is_file() else root / MANIFEST_NAME
        return _discover_manifest(csv_path.resolve(), label_map)
    return _discover_class_folders(root.resolve(), label_map)


def _walk(top: Path, problems: list[dict]) -> list[Path]:
    """Every non-folder entry under `top` (following folder links once), sorted. Folders that cannot be
    listed (permissions) and links to a folder already walked are added to problems (os.walk with
    onerror: pathlib's rglob silently skips what it cannot read)."""
    out: list[Path] = []
    seen: dict[str, str] = {}

    def onerror(err: OSError) -> None:
        problems.append({"path": str(err.filename), "reason": f"folder cannot be read: {type(err).__name__}: "
                                                              f"{err.strerror}"})

    for dirpath, dirnames, filenames in os.walk(top, onerror=onerror, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            problems.append({"path": dirpath, "reason": f"link to a folder already read ({seen[real]}); "
                                                        "its files are not read twice"})
            dirnames[:] = []
            continue
        seen[real] = dirpath
        dirnames.sort()
        out.extend(Path(dirpath) / name for name in filenames)
    return sorted(out)


def _not_a_file(f: Path) -> Optional[str]:
    """Why a walked entry is not a readable regular file, or None."""
    if f.is_symlink() and not f.exists():
        return f"dangling symbolic link (its target {os.readlink(f)!r} does not exist)"
    if not f.is_file():
        return "not a regular file"
    return None


def _stat(path: str) -> list:
    try:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    except OSError as e:
        return [type(e).__name__]


def _inputs(items: list[Item], problems: list[dict], manifest_bytes: Optional[bytes]) -> dict:
    """Hashes of what a build depends on: every path found (read or skipped) with its size and mtime,
    and the manifest's bytes."""
    paths = sorted({i.path for i in items} | {p["path"] for p in problems})
    listing = json.dumps([[p, _stat(p)] for p in paths])  # ASCII: surrogates are escaped
    return {"files_sha256": hashlib.sha256(listing.encode()).hexdigest(), "num_files": len(paths),
            "manifest_sha256": None if manifest_bytes is None else hashlib.sha256(manifest_bytes).hexdigest()}


def _no_match(what: str, classes: dict[str, int], label_map: dict, where: Path) -> ValueError:
    found = ", ".join(f"{printable(k)!r} ({n} files)" for k, n in sorted(classes.items())) or "none"
    return ValueError(f"cervix_folder: no image in {printable(where)} matched the label mapping {label_map}: "
                      f"found {what} {found}. Use the default config cervix_folder (the ImageFolder "
                      "convention: sorted class names -> 0, 1; treatable/not_treatable as paper B's "
                      "classes), a config whose mapping names these classes, or --label_map NAME=0|1,...")


def _discover_class_folders(root: Path, label_map) -> Discovery:
    problems: list[dict] = []
    files: dict[str, list[Path]] = {}
    try:
        entries = sorted(root.iterdir())
    except OSError as e:
        raise ValueError(f"cervix_folder: cannot list manual_dir {printable(root)}: {type(e).__name__}: "
                         f"{e.strerror}") from e
    for p in entries:
        if p.name.startswith("."):
            continue
        if p.is_dir():
            files[p.name] = []
            for f in _walk(p, problems):
                why = _not_a_file(f)
                if why:
                    problems.append({"path": str(f), "reason": why})
                elif not _is_image_name(f):
                    problems.append({"path": str(f), "reason": f"extension {f.suffix!r} not one of "
                                                               f"{IMAGE_EXTENSIONS}"})
                else:
                    files[p.name].append(f)
        else:
            why = _not_a_file(p) or "not in a class folder (expected FOLDER/<class>/<image>)"
            problems.append({"path": str(p), "reason": why})
    if not files:
        raise ValueError(f"cervix_folder: no class folder in {printable(root)} (and no {MANIFEST_NAME}): "
                         "expected FOLDER/<class>/<image>, e.g. FOLDER/treatable/ and FOLDER/not_treatable/, "
                         "or a CSV manifest with columns path,label[,group]")
    classes = {k: len(v) for k, v in files.items()}
    if label_map is None:
        label_map, kind, rule = imagefolder_mapping(files)
    else:
        kind, rule = None, "the config's label_map"
    items = []
    for name, fs in files.items():
        for f in fs:
            if name in label_map:
                items.append(Item(str(f), int(label_map[name]), str(f.relative_to(root))))
            else:
                problems.append({"path": str(f), "reason": f"class {name!r} not in the label mapping "
                                                           f"{sorted(label_map)}"})
    if not items:
        raise _no_match("class folders", classes, label_map, root)
    return Discovery("class_folders", str(root), items, problems, dict(label_map), rule, kind, classes,
                     _inputs(items, problems, None))


_CONTROL = {chr(c) for c in range(32)} - {"\t", "\n", "\r"} | {chr(0x7F)}


def read_manifest_text(csv_path: Path) -> tuple[str, str]:
    """(text, encoding) of a CSV manifest: UTF-8 (with or without a BOM, as Excel's "CSV UTF-8" writes
    it), else Latin-1 / Windows-1252 (Excel's "CSV" in western locales). Anything else (UTF-16, binary,
    other code pages) is a ValueError naming the file."""
    data = Path(csv_path).read_bytes()
    hint = "; save it as 'CSV UTF-8' (or Latin-1)"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
        raise ValueError(f"cervix_folder: cannot read the manifest {printable(csv_path)}: it looks like "
                         f"UTF-16 or a binary file (NUL bytes){hint}")
    if data.startswith(b"\xef\xbb\xbf"):
        data, encoding = data[3:], "utf-8-sig"
    else:
        encoding = "utf-8"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        if encoding == "utf-8-sig":
            line = data[:e.start].count(b"\n") + 1
            raise ValueError(f"cervix_folder: cannot read the manifest {printable(csv_path)}: it starts "
                             f"with a UTF-8 byte-order mark but line {line} is not UTF-8 ({e.reason}){hint}"
                             ) from e
        try:
            text, encoding = data.decode("cp1252"), "latin-1 (windows-1252)"
        except UnicodeDecodeError as e2:
            line = data[:e.start].count(b"\n") + 1
            raise ValueError(f"cervix_folder: cannot read the manifest {printable(csv_path)}: line {line} is "
                             f"neither UTF-8 ({e.reason}) nor Latin-1 / Windows-1252 (byte "
                             f"0x{data[e2.start]:02x} is undefined there){hint}") from e2
    bad = sorted({c for c in text if c in _CONTROL})
    if bad:
        line = text[:min(text.index(c) for c in bad)].count("\n") + 1
        raise ValueError(f"cervix_folder: cannot read the manifest {printable(csv_path)}: control character "
                         f"{bad[0]!r} on line {line}; not a text CSV{hint}")
    return text, encoding


def _discover_manifest(csv_path: Path, label_map) -> Discovery:
    base = csv_path.parent
    problems: list[dict] = []
    rows, listed = [], set()
    text, encoding = read_manifest_text(csv_path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = [f.strip() for f in (reader.fieldnames or [])]
    if "path" not in fields or "label" not in fields:
        raise ValueError(f"cervix_folder: {printable(csv_path)} must have a header with columns "
                         f"path,label[,group]; found {fields}")
    for line, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in row.items()}
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
            why = _not_a_file(f) if f.is_symlink() else "missing"
            problems.append({"path": str(f), "reason": f"listed in the manifest ({where}) but {why}"})
        else:
            rows.append((f, label, row.get("group") or rel, where))
    classes: dict[str, int] = {}
    for _, label, _, _ in rows:
        classes[label] = classes.get(label, 0) + 1
    if label_map is None:
        if not classes:
            raise ValueError(f"cervix_folder: {printable(csv_path)} lists no existing image "
                             f"({len(problems)} rows skipped, e.g. {problems[:1]})")
        label_map, kind, rule = imagefolder_mapping(classes)
    else:
        kind, rule = None, "the config's label_map"
    items = []
    for f, label, group, where in rows:
        if label in label_map:
            items.append(Item(str(f), int(label_map[label]), group))
        else:
            problems.append({"path": str(f), "reason": f"label {label!r} ({where}) not in the label mapping "
                                                       f"{sorted(label_map)}"})
    for f in _walk(base, problems):
        if _is_image_name(f) and f.resolve() not in listed:
            problems.append({"path": str(f), "reason": f"image file not listed in the manifest {csv_path}"})
    if not items:
        raise _no_match(f"labels in {MANIFEST_NAME if csv_path.name == MANIFEST_NAME else csv_path.name}",
                        classes, label_map, csv_path)
    return Discovery("manifest", str(csv_path), items, problems, dict(label_map), rule, kind, classes,
                     _inputs(items, problems, csv_path.read_bytes()), encoding)
