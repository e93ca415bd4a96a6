"""Procedural cervigram-like images with ground-truth masks: the embedded default dataset.

A scene is a dark/pink background with vaginal walls and speculum-like bright bars (distractors),
a roughly elliptical pink cervix at a random position, scale, aspect and rotation, a dark concave
slit (the os), a redder transformation zone (TZ) around the os and, for some women, a whitish
textured acetowhite lesion. Label rules (decided per woman first, then realised and verified):

- `treatability` = 1 (not treatable) when the lesion extends into the os, or the TZ is not fully
  visible (cut off by the image border, or hidden under a speculum bar); else 0.
- `dysplasia` = 1 when an acetowhite lesion is present; else 0.

Every example is a pure function of (config, index): the woman's anatomy comes from
(seed, group) and the image's camera jitter and lighting from (seed, index), so examples can be
generated in any order, in parallel, or one at a time. Shapes are computed on coordinate grids,
textures and lighting from low-resolution noise upsampled with PIL; no per-pixel Python loops.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Iterator, Optional

import numpy as np
from PIL import Image

LABEL_SETS = ("treatability", "dysplasia")
MASK_KEYS = ("cervix_mask", "os_mask", "tz_mask", "lesion_mask")

# Treatability modes of a positive woman and their probabilities (tz_hidden needs distractors).
_POSITIVE_MODES = {"lesion_in_os": 0.5, "tz_cut_off": 0.3, "tz_hidden": 0.2}
_MAX_JITTER_TRIES = 6
_MAX_GROUP_TRIES = 20


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. `num_positive` images (label 1) out of `num_images`, exactly.

    Women have `images_per_woman` images each (one smaller woman per class takes the remainder).
    `lesion_size` is the (min, max) lesion semi-axis as a fraction of the TZ semi-axis.
    `distractors` switches the speculum bars on (the vaginal walls are always drawn).
    """
    height: int = 128
    width: int = 192
    num_images: int = 48
    num_positive: int = 16
    images_per_woman: int = 3
    label: str = "treatability"
    seed: int = 0
    lesion_size: tuple[float, float] = (0.25, 0.45)
    distractors: bool = True

    def __post_init__(self):
        if self.label not in LABEL_SETS:
            raise ValueError(f"SyntheticConfig.label: expected one of {LABEL_SETS}, found {self.label!r}")
        if min(self.height, self.width) < 32:
            raise ValueError(f"SyntheticConfig: height and width must be >= 32, found {self.height}x{self.width}")
        if not 0 <= self.num_positive <= self.num_images or self.num_images < 1:
            raise ValueError(f"SyntheticConfig: need 0 <= num_positive <= num_images and num_images >= 1, "
                             f"found num_positive={self.num_positive}, num_images={self.num_images}")
        if self.images_per_woman < 1:
            raise ValueError(f"SyntheticConfig.images_per_woman: expected >= 1, found {self.images_per_woman}")
        lo, hi = self.lesion_size
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"SyntheticConfig.lesion_size: expected 0 < min <= max <= 1, found {self.lesion_size}")

    @property
    def num_women(self) -> int:
        return int(layout(self)[1].size)


@functools.lru_cache(maxsize=32)
def layout(config: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """(group of each image int64[N], label of each group int64[G]); ids run over groups in order."""
    k = config.images_per_woman
    sizes, labels = [], []
    for label, count in ((1, config.num_positive), (0, config.num_images - config.num_positive)):
        full, rest = divmod(count, k)
        sizes += [k] * full + ([rest] if rest else [])
        labels += [label] * (full + (1 if rest else 0))
    order = np.random.default_rng([config.seed, 101]).permutation(len(sizes))
    sizes, labels = np.asarray(sizes, np.int64)[order], np.asarray(labels, np.int64)[order]
    return np.repeat(np.arange(len(sizes), dtype=np.int64), sizes), labels


# ----------------------------------------------------------------------------------------------
# Geometry helpers (all vectorised over a window of pixel centres).

def _rot(theta):
    return np.cos(theta), np.sin(theta)


def _ellipse_d(x, y, e, bend=0.0):
    """Normalised squared radius of ellipse e = (cx, cy, a, b, theta) at x [1,w], y [h,1].

    `bend` curves the major axis into a parabola (sagitta bend * a), making a concave slit.
    """
    cx, cy, a, b, theta = e
    c, s = _rot(theta)
    dx, dy = x - cx, y - cy
    u = dx * c + dy * s
    v = dy * c - dx * s
    un = u / a
    if bend:
        v = v - bend * a * un * un
    vn = v / b
    return un * un + vn * vn


def _extent(e):
    """Half extents (x, y) of the bounding box of ellipse e."""
    _, _, a, b, theta = e
    c, s = _rot(theta)
    return float(np.hypot(a * c, b * s)), float(np.hypot(a * s, b * c))


def _window(e, H, W, pad=1.0):
    """Integer window (y0, y1, x0, x1) covering ellipse e scaled by pad, clipped to the image."""
    ex, ey = _extent(e)
    cx, cy = e[0], e[1]
    x0, x1 = int(max(0, np.floor(cx - pad * ex))), int(min(W, np.ceil(cx + pad * ex) + 1))
    y0, y1 = int(max(0, np.floor(cy - pad * ey))), int(min(H, np.ceil(cy + pad * ey) + 1))
    return y0, max(y0, y1), x0, max(x0, x1)


def _alpha(d, a, edge):
    """Soft coverage from normalised squared radius d: 0.5 on the boundary, ramp ~edge px wide."""
    return np.clip(0.5 + (1.0 - d) * (a / (2.0 * edge)), 0.0, 1.0)


def _segment_dist(x, y, bar):
    """Distance to the segment of a capsule bar = (x0, y0, x1, y1, half_width)."""
    x0, y0, x1, y1, _ = bar
    dx, dy = x1 - x0, y1 - y0
    ll = dx * dx + dy * dy
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / ll, 0.0, 1.0)
    px, py = x - (x0 + t * dx), y - (y0 + t * dy)
    return np.sqrt(px * px + py * py)


def _bar_window(bar, H, W):
    x0, y0, x1, y1, w = bar
    xa, xb = int(max(0, np.floor(min(x0, x1) - w))), int(min(W, np.ceil(max(x0, x1) + w) + 1))
    ya, yb = int(max(0, np.floor(min(y0, y1) - w))), int(min(H, np.ceil(max(y0, y1) + w) + 1))
    return ya, max(ya, yb), xa, max(xa, xb)


def _point_segment_dist(px, py, bar):
    return float(_segment_dist(np.float64(px), np.float64(py), bar))


# ----------------------------------------------------------------------------------------------
# Noise: white noise on a coarse scene canvas, upsampled (bicubic) into any image window.

@dataclasses.dataclass(frozen=True)
class _Noise:
    field: np.ndarray  # float32 [h, w] on the scene canvas
    cell: float        # scene pixels per canvas cell
    margin: float      # scene pixels of canvas outside the image on each side


def _make_noise(rng, H, W, cell):
    margin = 0.35 * max(H, W)
    h, w = int(np.ceil((H + 2 * margin) / cell)) + 1, int(np.ceil((W + 2 * margin) / cell)) + 1
    return _Noise(rng.standard_normal((h, w)).astype(np.float32), float(cell), float(margin))


def _sample(noise: _Noise, win, cam, H, W, out_shape=None):
    """The noise field over image window win = (y0, y1, x0, x1) under camera cam = (s, dx, dy)."""
    y0, y1, x0, x1 = win
    s, tx, ty = cam
    cx, cy = W / 2, H / 2
    to_u = lambda X: (((X - cx - tx) / s + cx) + noise.margin) / noise.cell - 0.5
    to_v = lambda Y: (((Y - cy - ty) / s + cy) + noise.margin) / noise.cell - 0.5
    box = (to_u(x0), to_v(y0), to_u(x1), to_v(y1))
    size = (x1 - x0, y1 - y0) if out_shape is None else (out_shape[1], out_shape[0])
    if min(size) <= 0:
        return np.zeros((size[1], size[0]), np.float32)
    img = Image.fromarray(noise.field, mode="F").resize(size, Image.BICUBIC, box=box)
    return np.asarray(img, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# Women (groups): anatomy drawn to realise the group's label.

def _draw_bar_from_edge(rng, H, W, s0):
    side = rng.integers(4)
    L = rng.uniform(0.25, 0.6) * max(H, W)
    ang = rng.uniform(-0.6, 0.6)
    if side == 0:    # top, pointing down
        x0, y0, base = rng.uniform(0, W), -2.0, np.pi / 2
    elif side == 1:  # bottom, pointing up
        x0, y0, base = rng.uniform(0, W), H + 2.0, -np.pi / 2
    elif side == 2:  # left, pointing right
        x0, y0, base = -2.0, rng.uniform(0, H), 0.0
    else:            # right, pointing left
        x0, y0, base = W + 2.0, rng.uniform(0, H), np.pi
    c, s = _rot(base + ang)
    return (x0, y0, x0 + L * c, y0 + L * s, rng.uniform(0.03, 0.06) * s0)


def _group_params(config: SyntheticConfig, group: int, label: int, attempt: int) -> dict:
    rng = np.random.default_rng([config.seed, 1, group, attempt])
    H, W = config.height, config.width
    s0 = float(min(H, W))
    if config.label == "treatability":
        if label:
            modes = {m: p for m, p in _POSITIVE_MODES.items() if config.distractors or m != "tz_hidden"}
            names = list(modes)
            p = np.asarray([modes[m] for m in names])
            mode = names[rng.choice(len(names), p=p / p.sum())]
        else:
            mode = "visible"
        has_lesion = True if mode == "lesion_in_os" else bool(rng.random() < 0.7)
        lesion_in_os = mode == "lesion_in_os"
    else:
        mode = "free"
        has_lesion = bool(label)
        lesion_in_os = bool(has_lesion and rng.random() < 0.4)

    # Cervix, TZ and os shapes (centres placed below).
    a_c = rng.uniform(0.25, 0.4) * s0
    b_c = a_c * rng.uniform(0.75, 1.0)
    th_c = rng.uniform(-np.pi / 5, np.pi / 5)
    a_t = a_c * rng.uniform(0.45, 0.65)
    b_t = a_t * rng.uniform(0.75, 1.0)
    th_t = th_c + rng.normal(0, 0.2)
    a_o = max(4.0, a_t * rng.uniform(0.22, 0.35))
    b_o = max(2.0, a_o * rng.uniform(0.2, 0.35))
    ex, ey = _extent((0, 0, a_t, b_t, th_t))
    m = max(3.0, 0.04 * s0)
    if mode in ("visible", "tz_hidden"):
        ox = rng.uniform(ex + m, max(ex + m, W - ex - m))
        oy = rng.uniform(ey + m, max(ey + m, H - ey - m))
    elif mode == "tz_cut_off":
        side = rng.integers(4)
        f = rng.uniform(0.25, 0.5)
        ox = rng.uniform(ex + m, max(ex + m, W - ex - m))
        oy = rng.uniform(ey + m, max(ey + m, H - ey - m))
        if side == 0:
            ox = ex * (1 - f)
        elif side == 1:
            ox = W - ex * (1 - f)
        elif side == 2:
            oy = ey * (1 - f)
        else:
            oy = H - ey * (1 - f)
    else:  # free: anywhere off-centre, the TZ may or may not be cut off
        ox, oy = rng.uniform(0.2, 0.8) * W, rng.uniform(0.2, 0.8) * H
    off = rng.normal(0, 0.08, 2) * (a_c, b_c)
    cervix = (ox - off[0], oy - off[1], a_c, b_c, th_c)
    tz = (ox, oy, a_t, b_t, th_t)
    os_ = (ox, oy, a_o, b_o, th_t + rng.normal(0, 0.15))
    bend = rng.uniform(-0.4, 0.4)

    lesion = None
    if has_lesion:
        lo, hi = config.lesion_size
        th_l = rng.uniform(0, np.pi)
        if lesion_in_os:
            a_l = max(1.4 * a_o, a_t * rng.uniform(max(lo, 0.45), max(hi, 0.7)))
            b_l = max(1.4 * a_o, a_l * rng.uniform(0.7, 1.0))
            cxy = np.array([ox, oy]) + rng.uniform(-0.25, 0.25, 2) * a_o
        else:
            a_l = a_t * rng.uniform(lo, hi)
            b_l = a_l * rng.uniform(0.6, 1.0)
            near = a_o + 1.2 * a_l + max(3.0, 0.1 * a_t)
            dist = rng.uniform(near, max(near, 1.1 * a_t))
            phi = rng.uniform(0, 2 * np.pi)
            cxy = np.array([ox, oy]) + dist * np.array([np.cos(phi), np.sin(phi)])
        lesion = (float(cxy[0]), float(cxy[1]), a_l, b_l, th_l)

    # Speculum bars: free distractors keep clear of the TZ unless the TZ is meant to be hidden.
    bars = []
    if config.distractors:
        if mode == "tz_hidden":
            phi = rng.uniform(0, 2 * np.pi)
            n = np.array([np.cos(phi), np.sin(phi)])
            q = np.array([ox, oy]) + n * rng.uniform(0.25, 0.6) * min(a_t, b_t)
            d = np.array([-n[1], n[0]])
            far, near_len = 2.0 * max(H, W), rng.uniform(0.3, 1.0) * a_t
            p0, p1 = q - far * d, q + near_len * d
            bars.append((p0[0], p0[1], p1[0], p1[1], max(3.0, rng.uniform(0.12, 0.25) * a_t)))
        for _ in range(rng.choice(3, p=[0.2, 0.4, 0.4])):
            for _ in range(20):
                bar = _draw_bar_from_edge(rng, H, W, s0)
                if mode == "free" or _point_segment_dist(ox, oy, bar) > max(ex, ey) + bar[4] + m:
                    bars.append(bar)
                    break

    jit = lambda sd: rng.normal(0, sd, 3)
    cervix_rgb = np.clip(np.array([215.0, 135.0, 140.0]) + jit(8), 0, 255)
    return dict(
        label=label, mode=mode, cervix=cervix, tz=tz, os=os_, bend=bend, lesion=lesion, bars=bars,
        opening=(cervix[0] + rng.normal(0, 0.1 * a_c), cervix[1] + rng.normal(0, 0.1 * a_c),
                 a_c * rng.uniform(1.3, 1.8), b_c * rng.uniform(1.3, 1.8), th_c + rng.normal(0, 0.3)),
        light=(cervix[0] + rng.normal(0, 0.1 * s0), cervix[1] + rng.normal(0, 0.1 * s0),
               rng.uniform(0.45, 0.7) * max(H, W)),
        fold_freq=rng.uniform(2.5, 4.5),
        colors=dict(
            background=np.array([35.0, 10.0, 12.0]) + jit(4),
            wall=np.clip(np.array([160.0, 65.0, 75.0]) + jit(10), 0, 255),
            cervix=cervix_rgb,
            tz=cervix_rgb * np.array([0.93, 0.72, 0.76]),
            os=np.array([70.0, 18.0, 28.0]) + jit(5),
            lesion=np.clip(np.array([240.0, 230.0, 228.0]) + jit(4), 0, 255),
            steel=np.clip(np.array([195.0, 200.0, 210.0]) + jit(6), 0, 255)),
        noise=dict(
            coarse=_make_noise(rng, H, W, max(H, W) / 10),
            mid=_make_noise(rng, H, W, max(2.0, max(H, W) / 40)),
            fine=_make_noise(rng, H, W, max(1.5, max(H, W) / 150))),
    )


def _camera(params, cam, H, W):
    """Image-space copies of the scene geometry under cam = (scale, dx, dy) about the centre."""
    s, tx, ty = cam
    cx, cy = W / 2, H / 2
    pt = lambda x, y: (s * (x - cx) + cx + tx, s * (y - cy) + cy + ty)
    ell = lambda e: None if e is None else (*pt(e[0], e[1]), s * e[2], s * e[3], e[4])
    bar = lambda b: (*pt(b[0], b[1]), *pt(b[2], b[3]), s * b[4])
    g = dict(params)
    for k in ("cervix", "tz", "os", "lesion", "opening"):
        g[k] = ell(params[k])
    g["bars"] = [bar(b) for b in params["bars"]]
    lx, ly = pt(*params["light"][:2])
    g["light"] = (lx, ly, s * params["light"][2])
    return g


# ----------------------------------------------------------------------------------------------
# Rendering.

def _render(g, cam, H, W, gain=1.0, with_image=True):
    """Masks (and the uint8 image) for image-space geometry g. Returns (image|None, masks, info).

    The image is composed channel-planar ([3, H, W] float32) so that blends are 2-D array ops,
    each layer only inside its own window.
    """
    noise = g["noise"]
    col = g["colors"]
    edge = max(1.0, 0.004 * max(H, W))
    masks = {k: np.zeros((H, W), np.uint8) for k in MASK_KEYS}
    tz_region = np.zeros((H, W), bool)
    img = _background(g, cam, H, W) if with_image else None

    cw = _window(g["cervix"], H, W, pad=1.25)
    lesion_touches_os = lesion_near_os = False
    if cw[1] > cw[0] and cw[3] > cw[2]:
        # The cervix over its window; TZ, lesion and os over theirs, clipped to the cervix window.
        d_c = _grid_d(cw, g["cervix"]) * (1.0 + 0.12 * _sample(noise["coarse"], cw, cam, H, W))
        cervix = d_c < 1.0
        masks["cervix_mask"][_sl(cw)] = cervix
        a_c = _alpha(d_c, g["cervix"][2], edge) if with_image else None
        if with_image:
            tex = _sample(noise["mid"], cw, cam, H, W)
            _blend(img, cw, a_c, col["cervix"], 1.0 + 0.05 * tex)

        tw = _clip_window(_window(g["tz"], H, W, pad=1.1), cw)
        d_t = _grid_d(tw, g["tz"])
        tz = (d_t < 1.0) & cervix[_rel(tw, cw)]
        tz_region[_sl(tw)] = d_t < 1.0
        if with_image:
            fine = _sample(noise["fine"], tw, cam, H, W)
            alpha = _alpha(d_t, g["tz"][2], 2 * edge) * a_c[_rel(tw, cw)]
            _blend(img, tw, alpha, col["tz"], 1.0 + 0.07 * tex[_rel(tw, cw)] + 0.03 * fine)

        ow = _clip_window(_window(g["os"], H, W, pad=1.6), cw)
        d_o = _grid_d(ow, g["os"], bend=g["bend"])
        os_region = (d_o < 1.0) & cervix[_rel(ow, cw)]

        if g["lesion"] is not None:
            lw = _clip_window(_window(g["lesion"], H, W, pad=1.3), cw)
            wob = _sample(noise["coarse"], lw, cam, H, W)
            d_l = _grid_d(lw, g["lesion"]) * (1.0 + 0.15 * wob)
            lesion = (d_l < 1.0) & cervix[_rel(lw, cw)]
            # Overlap with the os (and with the os grown by ~2.5 px) on the os window.
            lesion_on_ow = np.zeros(d_o.shape, bool)
            both = _clip_window(lw, ow)
            lesion_on_ow[_rel(both, ow)] = lesion[_rel(both, lw)]
            lesion_touches_os = bool((lesion_on_ow & os_region).any())
            lesion_near_os = bool((lesion_on_ow & (d_o < (1.0 + 2.5 / g["os"][3]) ** 2)).any())
            masks["lesion_mask"][_sl(lw)] = lesion
            if with_image:
                fine_l = _sample(noise["fine"], lw, cam, H, W)
                alpha = _alpha(d_l, g["lesion"][2], 1.5 * edge) * a_c[_rel(lw, cw)]
                _blend(img, lw, alpha, col["lesion"], 1.0 + 0.06 * fine_l - 0.05 * np.abs(wob))

        masks["tz_mask"][_sl(tw)] = tz
        masks["tz_mask"][_sl(ow)] &= ~os_region
        masks["lesion_mask"][_sl(ow)] &= ~os_region
        masks["os_mask"][_sl(ow)] = os_region
        if with_image:
            _blend(img, ow, _alpha(d_o, g["os"][3], 0.5 * edge) * a_c[_rel(ow, cw)], col["os"], 1.0)

    # Speculum bars occlude everything under them.
    tz_hidden = False
    for bar in g["bars"]:
        bw = _bar_window(bar, H, W)
        if bw[1] <= bw[0] or bw[3] <= bw[2]:
            continue
        x, y = _grid(bw)
        dist = _segment_dist(x, y, bar)
        w = bar[4]
        under = dist < w
        tz_hidden |= bool((under & tz_region[_sl(bw)]).any())
        for k in MASK_KEYS:
            masks[k][_sl(bw)][under] = 0
        if with_image:
            r = np.minimum(dist / w, 1.0)
            shade = 0.7 + 0.45 * (1.0 - r * r) ** 4   # cylindrical specular highlight
            _blend(img, bw, np.clip(0.5 + (w - dist) / edge, 0.0, 1.0), col["steel"], shade)

    ex, ey = _extent(g["tz"])
    cx, cy = g["tz"][0], g["tz"][1]
    tz_inside = cx - ex >= 1.0 and cy - ey >= 1.0 and cx + ex <= W - 1.0 and cy + ey <= H - 1.0
    info = dict(tz_visible=tz_inside and not tz_hidden, lesion_touches_os=lesion_touches_os,
                lesion_near_os=lesion_near_os, has_lesion=bool(masks["lesion_mask"].any()))

    if with_image:
        img *= _lighting(g, cam, H, W, gain)[None]
        img += 0.5
        np.clip(img, 0, 255, out=img)
        img = np.ascontiguousarray(img.astype(np.uint8).transpose(1, 2, 0))
    return img, masks, info


def _sl(win):
    return slice(win[0], win[1]), slice(win[2], win[3])


def _rel(inner, outer):
    """Slices of window `inner` inside window `outer` (inner must lie within outer)."""
    return slice(inner[0] - outer[0], inner[1] - outer[0]), slice(inner[2] - outer[2], inner[3] - outer[2])


def _clip_window(win, outer):
    y0, x0 = max(win[0], outer[0]), max(win[2], outer[2])
    return y0, max(y0, min(win[1], outer[1])), x0, max(x0, min(win[3], outer[3]))


def _grid(win):
    """Pixel-centre coordinates x [1, w], y [h, 1] of a window."""
    y0, y1, x0, x1 = win
    return ((np.arange(x0, x1, dtype=np.float32) + 0.5)[None, :],
            (np.arange(y0, y1, dtype=np.float32) + 0.5)[:, None])


def _grid_d(win, e, bend=0.0):
    x, y = _grid(win)
    return _ellipse_d(x, y, e, bend)


def _blend(img, win, alpha, rgb, mod):
    """In place over window win of planar img [3, H, W]: img += alpha * (rgb * mod - img)."""
    ys, xs = _sl(win)
    for c in range(3):
        sub = img[c, ys, xs]
        t = mod * np.float32(rgb[c]) - sub
        t *= alpha
        sub += t


def _background(g, cam, H, W):
    """Dark background and folded vaginal walls, made at 1/4 resolution and upsampled: [3, H, W]."""
    f = 4
    h, w = max(2, -(-H // f)), max(2, -(-W // f))
    x = ((np.arange(w, dtype=np.float32) + 0.5) * (W / w))[None, :]
    y = ((np.arange(h, dtype=np.float32) + 0.5) * (H / h))[:, None]
    wob = _sample(g["noise"]["coarse"], (0, H, 0, W), cam, H, W, out_shape=(h, w))
    d = _ellipse_d(x, y, g["opening"]) + 0.25 * wob
    wall = np.clip((d - 1.0) * 4.0, 0.0, 1.0)
    folds = 0.5 + 0.5 * np.sin(g["fold_freq"] * 2 * np.pi * np.sqrt(np.maximum(d, 0.0)) + 1.5 * wob)
    far = np.clip(1.3 - 0.25 * d, 0.3, 1.0)  # walls darken away from the opening
    col = g["colors"]
    out = np.empty((3, H, W), np.float32)
    for c in range(3):
        ch = col["background"][c] * (1 - wall) + col["wall"][c] * (0.6 + 0.4 * folds) * wall * far
        small = Image.fromarray(ch.astype(np.float32), mode="F")
        out[c] = np.asarray(small.resize((W, H), Image.BILINEAR), np.float32)
    return out


def _lighting(g, cam, H, W, gain):
    """Flash-like multiplicative lighting: a wide bright spot with a slow random modulation."""
    f = 8
    h, w = max(2, -(-H // f)), max(2, -(-W // f))
    x = ((np.arange(w, dtype=np.float32) + 0.5) * (W / w))[None, :]
    y = ((np.arange(h, dtype=np.float32) + 0.5) * (H / h))[:, None]
    lx, ly, sigma = g["light"]
    r2 = ((x - lx) ** 2 + (y - ly) ** 2) / (2 * sigma * sigma)
    wob = _sample(g["noise"]["coarse"], (0, H, 0, W), cam, H, W, out_shape=(h, w))
    light = (gain * (0.45 + 0.65 * np.exp(-r2)) * (1.0 + 0.06 * wob)).astype(np.float32)
    return np.asarray(Image.fromarray(light, mode="F").resize((W, H), Image.BILINEAR), np.float32)


# ----------------------------------------------------------------------------------------------
# Labels and the public generator.

def _realised(info, label_set):
    """The labels an image realises: {"treatability": 0|1|None (ambiguous), "dysplasia": 0|1}."""
    if not info["tz_visible"] or info["lesion_touches_os"]:
        treat = 1
    elif info["lesion_near_os"]:
        treat = None  # lesion within a couple of pixels of the os: neither label is clear-cut
    else:
        treat = 0
    return {"treatability": treat, "dysplasia": int(info["has_lesion"])}


@functools.lru_cache(maxsize=64)
def _woman(config: SyntheticConfig, group: int) -> dict:
    """The first anatomy draw for `group` that realises its label without camera jitter."""
    label = int(layout(config)[1][group])
    H, W = config.height, config.width
    for attempt in range(_MAX_GROUP_TRIES):
        params = _group_params(config, group, label, attempt)
        _, _, info = _render(params, (1.0, 0.0, 0.0), H, W, with_image=False)
        if _realised(info, config.label)[config.label] == label:
            return params
    raise RuntimeError(f"synthetic: could not realise label {label} for group {group} of {config} "
                       f"in {_MAX_GROUP_TRIES} draws; the image is probably too small")


def generate_example(config: SyntheticConfig, index: int) -> dict:
    """Example `index` (0..num_images-1): keys and dtypes as docs/internals.md "Examples"."""
    group_of, group_label = layout(config)
    if not 0 <= index < group_of.size:
        raise IndexError(f"synthetic: index {index} outside 0..{group_of.size - 1}")
    group = int(group_of[index])
    label = int(group_label[group])
    H, W = config.height, config.width
    s0 = min(H, W)
    params = _woman(config, group)
    for attempt in range(_MAX_JITTER_TRIES):
        rng = np.random.default_rng([config.seed, 2, index, attempt])
        k = 1.0 - attempt / (_MAX_JITTER_TRIES - 1)  # the last attempt has no jitter
        cam = (float(np.exp(k * np.clip(rng.normal(0, 0.04), -0.08, 0.08))),
               *(k * np.clip(rng.normal(0, 0.03 * s0, 2), -0.06 * s0, 0.06 * s0)))
        gain = float(rng.uniform(0.85, 1.15))
        g = _camera(params, cam, H, W)
        lx, ly, sig = g["light"]
        g["light"] = (lx + rng.normal(0, 0.05 * s0), ly + rng.normal(0, 0.05 * s0), sig)
        image, masks, info = _render(g, cam, H, W, gain=gain, with_image=True)
        labels = _realised(info, config.label)
        if labels[config.label] == label:
            break
    else:  # unreachable: the last attempt is the woman's verified jitter-free anatomy
        raise RuntimeError(f"synthetic: example {index} did not realise label {label}")
    cx, cy = g["cervix"][:2]
    treat = labels["treatability"]
    return {
        "image": image,
        "label": np.int64(label),
        "treatability": np.int64(0 if treat is None else treat),  # None: near, not into, the os
        "dysplasia": np.int64(labels["dysplasia"]),
        **masks,
        "has_masks": np.int64(1),
        "cervix_center": np.array([cx, cy], np.float32),
        "group": np.int64(group),
        "id": np.int64(index),
    }


def generate(config: SyntheticConfig, indices: Optional[range] = None) -> Iterator[dict]:
    """Yields generate_example(config, i) for i in indices (default: every example, in order)."""
    for i in (range(config.num_images) if indices is None else indices):
        yield generate_example(config, i)
