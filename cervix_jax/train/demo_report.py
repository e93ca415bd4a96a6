"""The short table `launch.py demo` (and so `make demo`) ends with: per run, the model, its test AUC
and accuracy at the validation-chosen threshold, for a detector (stage 1 of paper B) the AP50 of the
cervix box on the test split, and where the figures are; for paper A's patch model a line more: its
weight mass on the cervix against the cervix's area share and how far its regulator moved
(eval/patch_weights.json, `reports.patch_run`).

    python -m cervix_jax.train.demo_report runs/demo_stage1 runs/demo runs/demo_patch
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from cervix_jax.train import rundir


def patch_line(summary: dict) -> str:
    """Paper A's patch weights and regulator, one line (`reports.patch_run.summarize`'s result)."""
    return (f"weight mass on the cervix {summary['mass_cervix']:.3f} vs its area share "
            f"{summary['area_share']:.3f} ({summary['mass_over_area']:.2f}x; test); {summary['regulator']} "
            f"regulator centre error {summary['init_err']:.2f} -> {summary['reg_err']:.2f} patches (train)")


def _number(x) -> str:
    return "n/a" if x is None else f"{float(x):.3f}"


def _model_name(c: dict) -> str:
    """E.g. "retinanet resnet50 w16 (label)", "pyramid p3,p6,p7 on stage-1 runs/demo_stage1 (label)"."""
    m, label = c["model"], c["data"]["label"]
    if m["name"] == "retinanet":
        return f"retinanet {m['backbone']} w{m['width']} ({label})"
    detail = m.get("levels") or m.get("patch_size")
    name = m["name"] if detail is None else f"{m['name']} {detail}"
    if m.get("backbone_checkpoint"):
        kind = "random-init arch of" if m.get("backbone_random") else "on stage-1"
        name += f" {kind} {m['backbone_checkpoint']}"
    return f"{name} ({label})"


def rows(workdirs) -> list[dict]:
    """One row per workdir that has `eval/metrics.json` (missing files are reported as such)."""
    out = []
    for wd in map(Path, workdirs):
        row = {"workdir": str(wd), "model": "?", "test_auc": None, "test_accuracy": None, "n_test": None,
               "box_ap50": None, "figures": [str(wd / "eval"), str(wd / "explain")],
               "patch_weights": rundir.read_patch_weights(wd)}
        config = wd / "config.json"
        if config.exists():
            row["model"] = _model_name(json.loads(config.read_text()))
        metrics = wd / "eval" / "metrics.json"
        if metrics.exists():
            result = json.loads(metrics.read_text())
            test = result["test"]
            chosen = test["at_val_threshold"]
            row.update(test_auc=chosen["auc"], test_accuracy=chosen["accuracy"], n_test=test["n"])
            row["box_ap50"] = result.get("detection", {}).get("AP50")
        out.append(row)
    return out


def table(workdirs) -> str:
    """A plain-text table of `rows(workdirs)`, ready to print."""
    header = ("model", "test AUC", "test accuracy", "n test", "box AP50", "figures")
    table_rows = rows(workdirs)
    body = [(r["model"], _number(r["test_auc"]), _number(r["test_accuracy"]), str(r["n_test"] or "-"),
             "-" if r["box_ap50"] is None else _number(r["box_ap50"]),
             f"{r['figures'][0]}/  {r['figures'][1]}/") for r in table_rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    notes = [f"{r['workdir']}: {patch_line(r['patch_weights'])}" for r in table_rows if r["patch_weights"]]
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body] + notes) + \
        "\n(accuracy at the threshold chosen on validation; box AP50: the detector's COCO AP at IoU 0.5 of " \
        "the cervix box, test split; review the heatmaps with `python launch.py review --workdir DIR`)"


if __name__ == "__main__":
    print(table(sys.argv[1:]))
