"""Synthetic cervix generator v2: Table 3 rules from masks, grades, visits, boxes, placement, determinism."""
import numpy as np
import pytest

from cervix_jax.data import synthetic
from conftest import draw_seed
from cervix_jax.viz.sheet import contact_sheet

SEED = draw_seed()  # fresh each run (or CERVIX_TEST_SEED); printed on failure by tests/conftest.py


@pytest.fixture(autouse=True)
def _record_seed(request):
    request.node.user_properties.append(("random seed", SEED))


def _config(**kw):
    base = dict(height=96, width=144, num_images=30, num_positive=11, images_per_woman=3, seed=SEED)
    return synthetic.SyntheticConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def treat_examples():
    c = _config(num_images=60, num_positive=30)  # ~5 women per rendered reason
    return c, [synthetic.generate_example(c, i) for i in range(c.num_images)]


@pytest.fixture(scope="module")
def dys_examples():
    c = _config(label="dysplasia", num_images=24, num_positive=9)
    return c, [synthetic.generate_example(c, i) for i in range(c.num_images)]


def _dilate(m, r=1):
    """Binary dilation by a (2r+1)^2 square, NumPy reference."""
    m = np.pad(m.astype(bool), r)
    h, w = m.shape[0] - 2 * r, m.shape[1] - 2 * r
    out = np.zeros((h, w), bool)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= m[dy:dy + h, dx:dx + w]
    return out


def _touches_border(m):
    return bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())


def test_keys_dtypes_shapes(treat_examples):
    c, exs = treat_examples
    ex = exs[0]
    assert set(ex) == {"image", "label", "treatability", "dysplasia", *synthetic.MASK_KEYS,
                       *synthetic.EXTRA_MASK_KEYS, "has_masks", "cervix_center", "cervix_box", "reason",
                       "cin_grade", "visit", "group", "id"}
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == (c.height, c.width, 3)
    for k in synthetic.MASK_KEYS + synthetic.EXTRA_MASK_KEYS:
        assert ex[k].dtype == np.uint8 and ex[k].shape == (c.height, c.width)
        assert set(np.unique(ex[k])) <= {0, 1}
    assert ex["cervix_center"].dtype == np.float32 and ex["cervix_center"].shape == (2,)
    assert ex["cervix_box"].dtype == np.float32 and ex["cervix_box"].shape == (4,)
    for e in exs:
        assert int(e["reason"]) in (0, *synthetic.REASONS) and 0 <= int(e["cin_grade"]) <= 4
        assert int(e["treatability"]) == int(int(e["reason"]) > 0)
        assert int(e["dysplasia"]) == int(int(e["cin_grade"]) >= 2)
    assert [int(e["id"]) for e in exs] == list(range(c.num_images))


def test_class_counts_exact(treat_examples):
    c, exs = treat_examples
    labels = np.array([int(e["label"]) for e in exs])
    assert labels.sum() == c.num_positive
    assert (labels == np.array([int(e["treatability"]) for e in exs])).all()
    # Paper B's preset, from the layout alone: 304 positive of 1,033, labels constant per woman.
    group_of, group_label = synthetic.layout(synthetic.SyntheticConfig(
        height=800, width=1200, num_images=1033, num_positive=304, images_per_woman=3, seed=SEED))
    assert group_of.size == 1033 and group_label[group_of].sum() == 304
    assert np.bincount(group_of).max() == 3


def _mask_flags(e):
    """Table 3 rule flags recomputed from the masks alone (NumPy reference; reason 9 needs the hidden
    cervix and is checked through the generator's flags)."""
    lesion, os_, tz = e["lesion_mask"] > 0, e["os_mask"] > 0, e["tz_mask"] > 0
    cervix, polyp = e["cervix_mask"] > 0, e["polyp_mask"] > 0
    area = cervix.sum()
    ring = _dilate(os_, 1) & ~os_ & cervix & ~polyp & ~lesion
    return {
        1: bool((lesion & _dilate(os_, 1)).any()),
        2: bool((lesion & _dilate(~cervix, 1)).any()),
        3: lesion.sum() / area >= 0.35,
        7: bool((ring & ~tz).any()),
        10: polyp.sum() / area >= 0.02,
    }


def test_treatability_rules_from_masks(treat_examples):
    c, exs = treat_examples
    seen = set()
    for e in exs:
        f = _mask_flags(e)
        reason, where = int(e["reason"]), f"seed {SEED} id {int(e['id'])} reason {int(e['reason'])}"
        if reason == 0:
            assert not any(f.values()), (where, f)
            lesion, os_, cervix = e["lesion_mask"] > 0, e["os_mask"] > 0, e["cervix_mask"] > 0
            assert lesion.sum() / cervix.sum() < synthetic.NOT_TOO_LARGE
            assert not (lesion & _dilate(os_, 1)).any() and not (lesion & _dilate(~cervix, 1)).any()
        elif reason in f:
            assert f[reason], (where, f)
        seen.add(reason)
        assert int(e["label"]) == int(reason > 0)
    assert len(seen) >= 4  # several rendered reasons in 20 women


def test_reason_flags_and_nuisances(treat_examples):
    """The generator's realised flags match the label; nuisances occur in both classes."""
    c, _ = treat_examples
    white, bars = {0: [], 1: []}, {0: [], 1: []}
    for i in range(c.num_images):
        e, info = synthetic.generate_example_info(c, i)
        reason, label = int(e["reason"]), int(e["label"])
        assert any(info["flags"].values()) == bool(label)
        if reason:
            assert info["flags"][reason], f"seed {SEED} id {i}"
        assert info["num_lesions"] >= 1 and info["num_walls"] >= int(reason == 9)
        bars[label].append(info["num_bars"])
        img = e["image"].astype(int)
        white[label].append(((img.min(-1) > 180) & (e["lesion_mask"] == 0)).sum())  # mucus, highlights, bars
    assert min(np.mean(white[0]), np.mean(white[1])) > 0
    assert max(bars[0]) >= 1 and max(bars[1]) >= 1


def test_dysplasia_rule(dys_examples):
    """Dysplasia = CIN grade >= 2; lesions are present in both classes (only their texture differs)."""
    c, exs = dys_examples
    labels = np.array([int(e["label"]) for e in exs])
    grade = np.array([int(e["cin_grade"]) for e in exs])
    lesion = np.array([e["lesion_mask"].any() for e in exs])
    assert labels.sum() == c.num_positive
    np.testing.assert_array_equal(labels, (grade >= 2).astype(int))
    np.testing.assert_array_equal(labels, [int(e["dysplasia"]) for e in exs])
    assert lesion[labels == 0].mean() > 0.8 and lesion[labels == 1].all()


def _run_length(on):
    """Mean length of the horizontal runs of True in a 2-D bool array (NumPy reference)."""
    padded = np.pad(on.astype(np.int8), ((0, 0), (1, 1)))
    d = np.diff(padded, axis=1)
    starts, ends = np.nonzero(d == 1), np.nonzero(d == -1)
    lengths = ends[1] - starts[1]
    return lengths.mean() if lengths.size else 0.0


def test_high_grade_punctation_is_coarser():
    """At a size where the pattern resolves, the dots of CIN2+ lesions form longer runs than CIN0-1's.

    A rank statistic over 40 images: positives may also carry low-grade lesions and 30% of images are out
    of focus, so per-class medians of 9 images were noisy (ratio < 1.3 in 3 of 12 seeds); the AUC of the
    run length was >= 0.87 on 30 seeds at this size.
    """
    c = _config(height=288, width=432, num_images=40, num_positive=20, label="dysplasia")
    runs = {0: [], 1: []}
    for i in range(c.num_images):
        e = synthetic.generate_example(c, i)
        lesion = _erode(e["lesion_mask"] > 0, 2)
        if lesion.sum() < 50:
            continue
        g = e["image"][..., 1].astype(float)
        dots = lesion & (g < np.median(g[lesion]) - 25)
        runs[int(e["label"])].append(_run_length(dots))
    low, high = np.array(runs[0]), np.array(runs[1])
    assert len(low) >= 5 and len(high) >= 5
    auc = ((high[:, None] > low[None]) + 0.5 * (high[:, None] == low[None])).mean()
    assert auc > 0.75, (auc, runs)


def _erode(m, r):
    return ~_dilate(~m, r)


def test_cervix_box_visits_and_progression(treat_examples):
    c, exs = treat_examples
    for e in exs:
        m = e["cervix_mask"] > 0
        ys, xs = np.nonzero(m)
        np.testing.assert_array_equal(e["cervix_box"], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    empty = synthetic.cervix_box(np.zeros((4, 5), np.uint8))
    assert np.isnan(empty).all()
    by_group = {}
    for e in exs:
        by_group.setdefault(int(e["group"]), []).append(e)
    for es in by_group.values():
        assert [int(e["visit"]) for e in es] == list(range(len(es)))  # time order = index order
        grades = [int(e["cin_grade"]) for e in es]
        assert grades == sorted(grades) and len({int(e["reason"]) for e in es}) == 1


def test_placement(seed):
    s0 = 96
    centres = {}
    for placement in synthetic.PLACEMENTS:
        c = _config(num_images=24, num_positive=6, images_per_woman=1, placement=placement, seed=seed)
        xy = np.array([synthetic.generate_example(c, i)["cervix_center"] for i in range(c.num_images)])
        centres[placement] = np.hypot(xy[:, 0] - c.width / 2, xy[:, 1] - c.height / 2) / s0
    assert centres["centred"].max() < 0.15
    assert centres["off_centre"].min() > 0.12 - 0.07  # minus the camera jitter
    assert centres["anywhere"].max() > 0.15 and centres["off_centre"].mean() > centres["centred"].mean() + 0.1


def test_masks_align_with_image(treat_examples, dys_examples):
    """Lesion pixels are whiter than the rest of the cervix; the os is darker than the TZ.

    Whitish mucus (a label-independent nuisance) may lie over the os, so the os check is made on
    images without mucus, with the median (a small specular highlight may cover a few os pixels)."""
    checked = os_checked = 0
    pairs = [(c, e) for c, exs in (treat_examples, dys_examples) for e in exs]
    for config, e in pairs:
        mucus = synthetic.generate_example_info(config, int(e["id"]))[1]["num_mucus"]
        img = e["image"].astype(np.float64)
        white = img.min(axis=-1)  # whiteness: the smallest channel
        bright = img.mean(axis=-1)
        cervix, lesion = e["cervix_mask"] > 0, e["lesion_mask"] > 0
        os_, tz = e["os_mask"] > 0, e["tz_mask"] > 0
        rest = cervix & ~lesion & ~os_
        if lesion.sum() >= 8 and rest.sum() >= 8:
            assert white[lesion].mean() > white[rest].mean() + 20
            checked += 1
        tz_clean = tz & ~lesion
        if mucus == 0 and os_.sum() >= 4 and tz_clean.sum() >= 8:
            assert np.median(bright[os_]) < np.median(bright[tz_clean]) - 20, int(e["id"])
            os_checked += 1
        assert cervix[os_].all() and cervix[tz].all() and cervix[lesion].all()
        assert not (os_ & tz).any() and not (os_ & lesion).any()
    assert checked >= 5 and os_checked >= 3


def test_cervix_center_inside_cervix(treat_examples):
    for e in treat_examples[1]:
        x, y = e["cervix_center"]
        h, w = e["cervix_mask"].shape
        if 0 <= x < w and 0 <= y < h and e["cervix_mask"].sum() > 0.5 * np.pi * 20 ** 2:
            assert e["cervix_mask"][int(y), int(x)] or e["os_mask"].any()


def test_deterministic_and_independent_per_index(treat_examples):
    c, exs = treat_examples
    synthetic._woman.cache_clear()
    for i in (c.num_images - 1, 7, 0):  # other order, fresh caches
        again = synthetic.generate_example(c, i)
        for k in exs[i]:
            np.testing.assert_array_equal(again[k], exs[i][k], err_msg=f"key {k} index {i}")
    other = synthetic.generate_example(_config(seed=SEED + 1), 0)
    assert np.abs(other["image"].astype(int) - exs[0]["image"].astype(int)).mean() > 5
    assert list(e["id"] for e in synthetic.generate(c, range(3))) == [0, 1, 2]


def test_groups_share_anatomy(treat_examples):
    c, exs = treat_examples
    s0 = min(c.height, c.width)
    by_group = {}
    for e in exs:
        by_group.setdefault(int(e["group"]), []).append(e)
    assert len(by_group) == c.num_women
    iou = lambda a, b: (a & b).sum() / max(1, (a | b).sum())
    within, across, moved = [], [], 0
    for g, es in by_group.items():
        assert len({int(e["label"]) for e in es}) == 1
        for a, b in zip(es, es[1:]):
            assert np.linalg.norm(a["cervix_center"] - b["cervix_center"]) < 0.2 * s0
            within.append(iou(a["cervix_mask"] > 0, b["cervix_mask"] > 0))
            moved += not np.array_equal(a["image"], b["image"])
    firsts = [es[0]["cervix_mask"] > 0 for es in by_group.values()]
    across = [iou(a, b) for a, b in zip(firsts, firsts[1:])]
    assert np.mean(within) > 0.6 and np.mean(within) > np.mean(across) + 0.2
    assert moved >= 1  # jitter and lighting differ between a woman's images


def test_distractors_salient_and_off_centre():
    """Speculum bars are bright (as bright as a lesion) and not confined to the image centre."""
    c = _config(num_images=24, num_positive=0)
    bright_pixels = np.zeros((c.height, c.width))
    for i in range(c.num_images):
        e = synthetic.generate_example(c, i)
        bar = (e["image"].min(-1) > 150) & (e["cervix_mask"] == 0)
        bright_pixels += bar
    ys, xs = np.nonzero(bright_pixels)
    assert xs.size > 100
    off = (np.abs(xs - c.width / 2) > c.width / 4) | (np.abs(ys - c.height / 2) > c.height / 4)
    assert off.mean() > 0.3
    none = synthetic.SyntheticConfig(**{**c.__dict__, "distractors": False})
    e = synthetic.generate_example(none, 0)
    near_cervix = _dilate((e["cervix_mask"] > 0) | (e["polyp_mask"] > 0), 4)  # mucus may spill over the edge
    assert ((e["image"].min(-1) > 150) & ~near_cervix).sum() == 0


def test_config_errors():
    with pytest.raises(ValueError, match="label"):
        synthetic.SyntheticConfig(label="grade")
    with pytest.raises(ValueError, match="num_positive"):
        synthetic.SyntheticConfig(num_images=4, num_positive=5)
    with pytest.raises(ValueError, match="placement"):
        synthetic.SyntheticConfig(placement="middle")
    with pytest.raises(ValueError, match="lesion_size"):
        synthetic.SyntheticConfig(lesion_size=(0.5, 0.9))
    with pytest.raises(IndexError):
        synthetic.generate_example(_config(), 30)


def test_contact_sheet(tmp_path, treat_examples):
    from PIL import Image
    path = contact_sheet(treat_examples[1][:6], tmp_path / "sheet.png", ncols=3)
    arr = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert arr.shape[0] > 100 and arr.shape[1] > 300
    # the lesion outline colour (magenta) and the cervix outline (green) are drawn
    magenta = (arr[..., 0] > 200) & (arr[..., 1] < 80) & (arr[..., 2] > 200)
    green = (arr[..., 1] > 200) & (arr[..., 0] < 120) & (arr[..., 2] < 120)
    assert green.sum() > 50
    assert magenta.sum() > 10 or not any(e["lesion_mask"].any() for e in treat_examples[1][:6])


def test_every_visit_of_a_woman_realises_its_labels():
    """A woman's anatomy is verified at every visit, not only the first and last: at seed 217 (64x96,
    3 visits) group 130's middle visit reaches CIN2+ while its lesion is still too small to see, and
    example 391 raised "did not realise label" when only visits 0 and 2 were checked."""
    cfg = synthetic.SyntheticConfig(height=64, width=96, num_images=600, num_positive=180,
                                    images_per_woman=3, label="treatability", seed=217)
    group = int(synthetic.layout(cfg)[0][391])
    params = synthetic._woman(cfg, group)
    for visit in range(cfg.images_per_woman):
        g = synthetic._visit_geometry(params, visit)
        _, _, info = synthetic._render(g, (1.0, 0.0, 0.0), cfg.height, cfg.width, with_image=False)
        assert synthetic._realised(info, g) == synthetic._wanted(g), visit
    ex, info = synthetic.generate_example_info(cfg, 391)
    assert int(ex["dysplasia"]) == synthetic._wanted(
        synthetic._visit_geometry(params, int(synthetic._visits(cfg)[391])))["dysplasia"]
