"""The per-reason contact sheet of docs/data.md: one row per rendered Table 3 reason, several women.

    python scripts/synthetic_reason_sheet.py [--out docs/img/synthetic_reasons.png] [--per_row 4]

Generates one image (the first visit) per woman of a 240x360 treatability config until every row
has --per_row women, then draws them with their mask outlines (cervix, TZ, os, lesion, polyp).
"""

import argparse

from tqdm import tqdm

from cervix_jax.data import synthetic
from cervix_jax.viz.sheet import rows_sheet

TITLES = {
    0: "0 treatable",
    1: "1 lesion into the\ncanal (touches os)",
    2: "2 lesion into the\nfornix (cervix edge)",
    3: "3 lesion too large\n(>= 40% of cervix)",
    7: "7 TZ type 3 (SCJ\nruns into the os)",
    9: "9 vaginal wall\nover the cervix",
    10: "10 large polyp",
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="docs/img/synthetic_reasons.png")
    p.add_argument("--per_row", type=int, default=4)
    p.add_argument("--seed", type=int, default=3)
    a = p.parse_args()
    cfg = synthetic.SyntheticConfig(
        height=240,
        width=360,
        num_images=240,
        num_positive=200,
        images_per_woman=1,
        label="treatability",
        seed=a.seed,
    )
    rows = {r: [] for r in TITLES}
    for i in tqdm(range(cfg.num_images), desc="women"):
        if all(len(v) >= a.per_row for v in rows.values()):
            break
        reason = int(synthetic._woman(cfg, int(synthetic.layout(cfg)[0][i]))["reason"])
        if len(rows[reason]) < a.per_row:
            rows[reason].append(synthetic.generate_example(cfg, i))
    rows_sheet([(TITLES[r], exs) for r, exs in rows.items()], a.out)
    print("wrote", a.out, {r: len(v) for r, v in rows.items()})


if __name__ == "__main__":
    main()
