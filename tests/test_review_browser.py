"""The review page in a real headless Chromium: rate three images with clicks and keys, reload, resume."""
import json
import os
import shutil

import sys

import pytest

from cervix_jax.review import summarize

# the shared helpers, also when run as a script
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_review import Running, write_workdir  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def launch(p):
    """Debian's chromium through PyPI's playwright; fails (never skips) when it is missing."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"headless Chromium not found at {CHROMIUM}: install Debian's package with "
                    "`apt-get update && apt-get install -y chromium` (or `make browser`); "
                    "never `playwright install`")
    return p.chromium.launch(executable_path=CHROMIUM, args=ARGS)


def test_rate_three_images_reload_and_summarize(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    workdir = str(tmp_path)
    write_workdir(workdir, n=8, size=48, seed=1)  # 6 correct; 103 and 106 labelled not treatable
    srv = Running(workdir, blind=True)
    errors = []
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{srv.port}/?reviewer=alice")
            progress = page.locator("#progress")
            expect(progress).to_have_text("0 of 6 reviewed")
            expect(page.locator("#threshold-value")).to_have_text("20%")
            expect(page.locator("#panels figcaption")).to_have_text(["Image", "Heatmap A", "Heatmap B"])
            assert "102" in page.locator("#item-info").inner_text()
            # the heatmap canvas is the image with JET colours where the map passes the cut
            colored = """() => { const img = document.querySelector('#panel-image img');
                const c = document.querySelector('figure.heatmap canvas');
                if (!img.complete || c.width !== 48) return -1;
                const t = document.createElement('canvas'); t.width = 48; t.height = 48;
                const tc = t.getContext('2d'); tc.drawImage(img, 0, 0);
                const a = tc.getImageData(0, 0, 48, 48).data;
                const b = c.getContext('2d').getImageData(0, 0, 48, 48).data;
                let n = 0;
                for (let i = 0; i < a.length; i += 4)
                    if (Math.abs(a[i] - b[i]) + Math.abs(a[i+2] - b[i+2]) > 20) n++;
                return n; }"""
            page.wait_for_function(f"() => ({colored})() > 0", timeout=10000)
            low = page.evaluate(colored)
            page.locator("#threshold").fill("90")  # a higher cut leaves fewer coloured pixels
            expect(page.locator("#threshold-value")).to_have_text("90%")
            page.wait_for_function(f"() => ({colored})() < {low} && ({colored})() >= 0")
            page.locator("#threshold").fill("20")

            # image 1 (102, treatable): clicks
            page.locator('figure.heatmap[data-position="0"] button[data-answer="meaningful"]').click()
            page.locator('figure.heatmap[data-position="1"] button[data-answer="out_of_roi"]').click()
            expect(progress).to_have_text("1 of 6 reviewed")
            page.locator("#next").click()
            # image 2 (103, not treatable): keys, then referral reasons by clicks
            expect(page.locator("#referral")).to_be_visible()
            page.keyboard.press("1")
            page.keyboard.press("s")  # second heatmap: insufficient coverage
            expect(page.locator('figure.heatmap[data-position="1"] button.chosen')).to_have_attribute(
                "data-answer", "insufficient_coverage")
            expect(progress).to_have_text("1 of 6 reviewed")  # referral reason still missing
            page.get_by_label("type 3 TZ").check()
            page.get_by_label("lesion extends into the fornix").check()
            expect(progress).to_have_text("2 of 6 reviewed")
            page.keyboard.press("n")
            # image 3 (104): keys only, first answer corrected
            page.keyboard.press("q")
            page.keyboard.press("1")
            page.keyboard.press("2")
            expect(progress).to_have_text("3 of 6 reviewed")

            page.reload()
            expect(progress).to_have_text("3 of 6 reviewed")
            assert "105" in page.locator("#item-info").inner_text()  # resumed at the first open image
            page.keyboard.press("p")
            expect(page.locator("button.chosen")).to_have_count(2)  # previous answers shown
            assert page.evaluate("document.body.innerText").lower().count("crm") == 0
            browser.close()
    finally:
        srv.close()
    assert errors == []

    lines = [json.loads(x) for x in open(os.path.join(workdir, "review", "ratings-alice.jsonl"))]
    assert len(lines) == 9  # 2 + (2 + 2 referral toggles) + 3
    by_pos = {(r["image"], r["position"]): r["explainer"] for r in lines if r["kind"] == "explainer"}
    s = summarize(workdir)["reviewers"]["alice"]
    expected = {"cam": {}, "crm": {}}
    for (image, pos), answer in [((102, 0), "meaningful"), ((102, 1), "out_of_roi"), ((103, 0), "meaningful"),
                                 ((103, 1), "insufficient_coverage"), ((104, 0), "meaningful"),
                                 ((104, 1), "meaningful")]:
        expected[by_pos[(image, pos)]][image] = answer
    for m in ("cam", "crm"):
        e = s["explainers"][m]
        good = sum(a == "meaningful" for a in expected[m].values())
        assert (e["rated"], e["meaningful"], e["misplaced"]) == (3, good, 3 - good)
    assert sum(s["explainers"][m]["misplaced"] for m in ("cam", "crm")) == 2
    assert sorted(s["referral_reasons"]) == [["fornix", 1], ["tz3", 1]]


def screenshot(out, workdir=None, split="test"):
    """Saves the page (1280x800) for the README, from a copy of ``workdir`` or a synthetic one."""
    import tempfile

    from playwright.sync_api import sync_playwright

    copy = tempfile.mkdtemp()
    if workdir is None:
        write_workdir(copy, n=12, size=224, seed=11)
    else:  # rate in a copy: the run's own review folder stays untouched
        shutil.copytree(os.path.join(workdir, "explain", split), os.path.join(copy, "explain", split))
    srv = Running(copy, split=split)
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{srv.port}/?reviewer=screenshot")
            page.wait_for_selector("figure.heatmap canvas")
            page.evaluate("go(Math.max(0, S.items.findIndex((it) => it.referral)))")
            page.keyboard.press("1")
            page.keyboard.press("s")
            boxes = page.locator("#referral-options input:visible")
            for i in range(min(2, boxes.count())):
                boxes.nth(3 * i + 2).check()
            page.wait_for_timeout(500)
            page.screenshot(path=out)
            browser.close()
    finally:
        srv.close()
        shutil.rmtree(copy)


if __name__ == "__main__":  # python tests/test_review_browser.py docs/img/review.png [WORKDIR]
    screenshot(sys.argv[1], *sys.argv[2:3])
