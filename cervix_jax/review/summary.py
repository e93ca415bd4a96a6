"""Statistics of an expert review (paper B, Section 4.3) from ``WORKDIR/review/ratings-*.jsonl``.

Per reviewer and explainer: misplacements (count and share of the rated images), "meaningful"
share, misplacement and referral reasons by frequency, and how the judgments agree with the
explainers' quantitative metrics in index.json. Between every two reviewers: Cohen's kappa.
The last answer for an (image, explainer) pair wins. Unreadable lines of a ratings file (not UTF-8,
not JSON) are skipped and reported (`skipped_lines`); files whose name is not a valid reviewer name
are ignored and reported too. summary.json is strict JSON. See docs/review.md.
"""
from __future__ import annotations

import collections
import glob
import itertools
import json
import math
import os

from cervix_jax.review.server import (ANSWERS, REFERRAL_REASONS, json_safe, load_index, read_ratings,
                                      valid_reviewer)


def cohen_kappa(a, b):
    """Cohen's kappa of two equally long label sequences; None when undefined (chance agreement 1)."""
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa: expected sequences of equal length, found {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = collections.Counter(a), collections.Counter(b)
    expected = sum(ca[k] * cb[k] for k in ca) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def pearson(x, y):
    """Pearson correlation (point-biserial / phi for a binary variable); None when a side is constant."""
    n = len(x)
    if n != len(y):
        raise ValueError(f"pearson: expected sequences of equal length, found {len(x)} and {len(y)}")
    if n < 2:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def load_reviews(workdir, split, items, problems=None):
    """{reviewer: {"explainer": {(image, method): answer}, "referral": {image: [reasons]}}}, last answer wins.

    ``problems`` (a dict, optional) receives {file name: "why"} for files or lines that were skipped."""
    reviews = {}
    problems = {} if problems is None else problems
    for path in sorted(glob.glob(os.path.join(workdir, "review", "ratings-*.jsonl"))):
        base = os.path.basename(path)
        name = base[len("ratings-"):-len(".jsonl")]
        if not valid_reviewer(name):
            problems[ascii(base)] = "ignored: not a valid reviewer name"
            continue
        per = {"explainer": {}, "referral": {}}
        records, skipped = read_ratings(path)
        if skipped:
            problems[base] = f"skipped unreadable lines {skipped}"
        for r in records:
            image = str(r.get("image"))
            if r.get("split") != split or image not in items:
                continue
            if r.get("kind") == "referral" and isinstance(r.get("answer"), list):
                per["referral"][image] = [a for a in r["answer"]
                                          if isinstance(a, str) and a in REFERRAL_REASONS]
            elif r.get("kind") == "explainer" and isinstance(r.get("answer"), str) and r["answer"] in ANSWERS:
                per["explainer"][(image, r.get("explainer"))] = r["answer"]
        if per["explainer"] or per["referral"]:
            reviews[name] = per
    return reviews


def by_frequency(counter):
    return [[k, n] for k, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))]


def _number(v):
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def metric_agreement(judged, items, method):
    """Per metric: mean among "meaningful" and "misplaced" ratings and their correlation.

    ``judged`` maps image id -> answer. The correlation is Pearson's r between meaningful (1) /
    misplaced (0) and the metric: point-biserial for a continuous metric, phi for a 0/1 one.
    """
    keys = sorted({k for image in judged
                   for k in ((items[image].get("metrics") or {}).get(method) or {})})
    out = {}
    for key in keys:
        ys, vs = [], []
        for image, answer in sorted(judged.items()):
            v = _number(((items[image].get("metrics") or {}).get(method) or {}).get(key))
            if v is not None:
                ys.append(1.0 if answer == "meaningful" else 0.0)
                vs.append(v)
        if not vs:
            continue
        good = [v for y, v in zip(ys, vs) if y == 1.0]
        bad = [v for y, v in zip(ys, vs) if y == 0.0]
        out[key] = {
            "n_meaningful": len(good), "n_misplaced": len(bad),
            "mean_meaningful": sum(good) / len(good) if good else None,
            "mean_misplaced": sum(bad) / len(bad) if bad else None,
            "correlation": pearson(ys, vs),
            "correlation_kind": "phi" if set(vs) <= {0.0, 1.0} else "point_biserial",
        }
    return out


def summarize(workdir, *, split="test"):
    """Computes, prints and writes ``WORKDIR/review/summary.md`` and ``summary.json``; returns the dict."""
    _, index, methods = load_index(workdir, split)
    items = {str(it["id"]): it for it in index["items"]}
    problems = {}
    reviews = load_reviews(workdir, split, items, problems)
    result = {
        "split": split, "methods": methods, "n_items": len(items),
        "n_correct": sum(bool(it["correct"]) for it in items.values()),
        "reviewers": {}, "agreement": [], "skipped": problems,
    }
    for name, per in reviews.items():
        explainers = {}
        for m in methods:
            judged = {image: a for (image, method), a in per["explainer"].items() if method == m}
            rated = len(judged)
            meaningful = sum(a == "meaningful" for a in judged.values())
            misplaced = rated - meaningful
            explainers[m] = {
                "rated": rated, "meaningful": meaningful, "misplaced": misplaced,
                "meaningful_share": meaningful / rated if rated else None,
                "misplaced_share": misplaced / rated if rated else None,
                "reasons": by_frequency(collections.Counter(a for a in judged.values() if a != "meaningful")),
                "metrics": metric_agreement(judged, items, m),
            }
        referral = collections.Counter(r for reasons in per["referral"].values() for r in reasons)
        result["reviewers"][name] = {
            "n_images": len({image for image, _ in per["explainer"]} | set(per["referral"])),
            "explainers": explainers,
            "n_referral_images": sum(bool(v) for v in per["referral"].values()),
            "referral_reasons": by_frequency(referral),
        }
    for ra, rb in itertools.combinations(sorted(reviews), 2):
        pair = {"reviewers": [ra, rb], "explainers": {}}
        for m in methods:
            ea, eb = reviews[ra]["explainer"], reviews[rb]["explainer"]
            common = sorted(k for k in ea if k[1] == m and k in eb)
            a = [ea[k] for k in common]
            b = [eb[k] for k in common]
            pair["explainers"][m] = {
                "n": len(common),
                "observed_agreement": sum(x == y for x, y in zip(a, b)) / len(common) if common else None,
                "kappa": cohen_kappa(a, b),
                "kappa_binary": cohen_kappa([x == "meaningful" for x in a], [y == "meaningful" for y in b]),
            }
        result["agreement"].append(pair)

    text = to_markdown(result)
    folder = os.path.join(workdir, "review")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(json_safe(result), f, indent=2, allow_nan=False)
    with open(os.path.join(folder, "summary.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return result


def _fmt(x, pct=False):
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def to_markdown(s):
    """The summary as a Markdown report."""
    lines = [f"# Expert review: split `{s['split']}`", "",
             f"{s['n_correct']} of {s['n_items']} images correctly classified (reviewed by default).", ""]
    if not s["reviewers"]:
        lines.append("No ratings yet.")
    for name, why in (s.get("skipped") or {}).items():
        lines += [f"Warning: `{name}`: {why}.", ""]
    for name, r in s["reviewers"].items():
        lines += [f"## Reviewer `{name}` ({r['n_images']} images)", "",
                  "| explainer | rated | meaningful | misplaced | misplacement reasons |",
                  "|---|---|---|---|---|"]
        for m, e in r["explainers"].items():
            reasons = ", ".join(f"{ANSWERS[k]} ({n})" for k, n in e["reasons"]) or "-"
            lines.append(f"| {m.upper()} | {e['rated']} | {e['meaningful']} "
                         f"({_fmt(e['meaningful_share'], True)}) "
                         f"| {e['misplaced']}/{e['rated']} ({_fmt(e['misplaced_share'], True)}) "
                         f"| {reasons} |")
        lines += ["", f"Referral reasons ({r['n_referral_images']} not-treatable images):", ""]
        lines += [f"- {REFERRAL_REASONS[k]}: {n}" for k, n in r["referral_reasons"]] or ["- none"]
        lines += ["", "Judgments vs. quantitative metrics (mean among meaningful / misplaced; r):", "",
                  "| explainer | metric | meaningful | misplaced | r |", "|---|---|---|---|---|"]
        for m, e in r["explainers"].items():
            for key, v in e["metrics"].items():
                lines.append(f"| {m.upper()} | {key} | {_fmt(v['mean_meaningful'])} (n={v['n_meaningful']}) "
                             f"| {_fmt(v['mean_misplaced'])} (n={v['n_misplaced']}) "
                             f"| {_fmt(v['correlation'])} ({v['correlation_kind']}) |")
        lines.append("")
    for pair in s["agreement"]:
        a, b = pair["reviewers"]
        lines += [f"## Agreement `{a}` vs `{b}`", "",
                  "| explainer | images both rated | observed | kappa (all answers) "
                  "| kappa (meaningful vs misplaced) |",
                  "|---|---|---|---|---|"]
        for m, e in pair["explainers"].items():
            lines.append(f"| {m.upper()} | {e['n']} | {_fmt(e['observed_agreement'], True)} "
                         f"| {_fmt(e['kappa'])} | {_fmt(e['kappa_binary'])} |")
        lines.append("")
    return "\n".join(lines)
