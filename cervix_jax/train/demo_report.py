"""The short table `launch.py demo` (and so `make demo`) ends with: per run, the model, its test AUC
and accuracy at the validation-chosen threshold, and where the figures are.

    python -m cervix_jax.train.demo_report runs/demo runs/demo_patch
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _number(x) -> str:
    return "n/a" if x is None else f"{float(x):.3f}"


def rows(workdirs) -> list[dict]:
    """One row per workdir that has `eval/metrics.json` (missing files are reported as such)."""
    out = []
    for wd in map(Path, workdirs):
        row = {"workdir": str(wd), "model": "?", "test_auc": None, "test_accuracy": None, "n_test": None,
               "figures": [str(wd / "eval"), str(wd / "explain")]}
        config = wd / "config.json"
        if config.exists():
            c = json.loads(config.read_text())
            model = c["model"]["name"]
            detail = c["model"].get("levels") or c["model"].get("patch_size")
            row["model"] = f"{model} ({c['data']['label']})" if detail is None else \
                f"{model} {detail} ({c['data']['label']})"
        metrics = wd / "eval" / "metrics.json"
        if metrics.exists():
            test = json.loads(metrics.read_text())["test"]
            chosen = test["at_val_threshold"]
            row.update(test_auc=chosen["auc"], test_accuracy=chosen["accuracy"], n_test=test["n"])
        out.append(row)
    return out


def table(workdirs) -> str:
    """A plain-text table of `rows(workdirs)`, ready to print."""
    header = ("model", "test AUC", "test accuracy", "n test", "figures")
    body = [(r["model"], _number(r["test_auc"]), _number(r["test_accuracy"]), str(r["n_test"] or "-"),
             f"{r['figures'][0]}/  {r['figures'][1]}/") for r in rows(workdirs)]
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body]) + \
        "\n(accuracy at the threshold chosen on validation; review the heatmaps with " \
        "`python launch.py review --workdir DIR`)"


if __name__ == "__main__":
    print(table(sys.argv[1:]))
