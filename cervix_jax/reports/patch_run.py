"""Does one run of paper A's patch model show the paper's idea? Its patch weights on the cervix, and how
far its iterative regulator moved toward the cervix (docs/results/paper_a.md, "The demo's patch model").

    python -m cervix_jax.reports.patch_run runs/demo_patch_long

For the finished run in WORKDIR (its own config.json and data) it measures, with
`regulator_evidence.weights_and_regulator`:
  * on every test image, at the best checkpoint: the weight mass on the cervix, sum(a * cervix share of
    the patch) / sum(a), against the cervix's area share of the image (what flat weights give);
  * on every training image, at the last checkpoint: the regulator centre error |mu - c| (patch units;
    c = centroid of the cervix mask) at the start (the grid centre) and at the end, and the distance the
    regulator moved.
Writes WORKDIR/eval/patch_weights.json (means over images, and the per-image values) and prints a
line. `launch.py demo` runs it for every patch-model run, and its closing table shows that line.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from cervix_jax.train import rundir

PER_IMAGE = ("mass_cervix", "area_share", "init_err", "reg_err", "weight_err", "reg_moved")


def summarize(config, workdir) -> dict:
    """The measures above for the finished patch-model run in `workdir` (config: its ConfigDict)."""
    from cervix_jax.reports.regulator_evidence import weights_and_regulator
    from cervix_jax.train.data import local_data
    if config.model.name != "patch":
        raise ValueError(f"{workdir}: config.model.name is {config.model.name!r}; the patch-weight "
                         f"summary needs paper A's patch model ('patch')")
    data = local_data(config)
    train_ex = data.examples("train", 10 ** 9)
    test_ex = data.examples("test", 10 ** 9)
    per_image = weights_and_regulator(config, Path(workdir), data, train_ex, test_ex)
    out = {k: float(np.nanmean(per_image[k])) for k in PER_IMAGE}
    out["mass_over_area"] = out["mass_cervix"] / out["area_share"]
    out.update(regulator=str(config.model.regulator), n_test=len(test_ex), n_train=len(train_ex),
               best_step=per_image["best_step"], last_step=per_image["last_step"],
               per_image={k: per_image[k] for k in PER_IMAGE})
    return out


def write(config, workdir) -> dict:
    summary = summarize(config, workdir)
    rundir.write_patch_weights(workdir, summary)
    return summary


def main(argv) -> int:
    if len(argv) != 1:
        print("usage: python -m cervix_jax.reports.patch_run WORKDIR", file=sys.stderr)
        return 2
    import ml_collections as mlc

    from cervix_jax.train.demo_report import patch_line
    workdir = Path(argv[0])
    config = mlc.ConfigDict(rundir.read_config(workdir))
    summary = write(config, workdir)
    print(f"{workdir}: {patch_line(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
