"""Expert review server and summary: security, ratings files, statistics vs. independent references."""
import contextlib
import datetime
import json
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from sklearn.metrics import cohen_kappa_score

from cervix_jax.review import make_server, serve, summarize
from cervix_jax.review import server as review_server

METHODS = ("cam", "crm")
CLASS_NAMES = ["treatable", "not treatable"]


def draw_cervix(rng, size):
    """A synthetic-looking cervix photo: pink ellipse, dark os, whitish lesion."""
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(20, 60, 3)))
    d = ImageDraw.Draw(img)
    cx, cy = size * rng.uniform(0.4, 0.6, 2)
    r = size * rng.uniform(0.3, 0.4)
    d.ellipse([cx - r, cy - r * 0.85, cx + r, cy + r * 0.85], fill=(214, 120, 130))
    lx, ly = cx + r * rng.uniform(-0.5, 0.5), cy + r * rng.uniform(-0.5, 0.5)
    lr = r * rng.uniform(0.2, 0.35)
    d.ellipse([lx - lr, ly - lr, lx + lr, ly + lr], fill=(235, 215, 215))
    d.ellipse([cx - r * 0.12, cy - r * 0.06, cx + r * 0.12, cy + r * 0.06], fill=(110, 30, 45))
    img = img.filter(ImageFilter.GaussianBlur(size / 60))
    noisy = np.asarray(img, np.float64) + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), (lx, ly)


def heatmap(rng, size, center):
    """A max-normalised uint8 blob near ``center`` (the contract's maps/<method>/<id>.png)."""
    yy, xx = np.mgrid[0:size, 0:size]
    cx, cy = np.asarray(center) + rng.normal(0, size * 0.15, 2)
    s = size * rng.uniform(0.08, 0.2)
    bx, by = rng.uniform(0, size, 2)
    m = (np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
         + 0.4 * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * (2 * s) ** 2)))
    return (255 * m / m.max()).astype(np.uint8)


def write_workdir(root, *, n=8, size=48, seed=0, split="test", n_wrong=2, class_names=CLASS_NAMES):
    """Writes WORKDIR/explain/<split>/ as docs/internals.md fixes it; returns the index dict."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "explain", split)
    for sub in ["images"] + [f"{k}/{m}" for k in ("maps", "overlays") for m in METHODS]:
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    items = []
    for i in range(n):
        image_id = 100 + i
        img, lesion = draw_cervix(rng, size)
        img.save(os.path.join(base, "images", f"{image_id}.png"))
        label = int(i % 3 == 0)
        correct = i >= n_wrong
        pred = label if correct else 1 - label
        score = float(rng.uniform(0.55, 0.99) if pred else rng.uniform(0.01, 0.45))
        item = {"id": image_id, "label": label, "score": score, "pred": pred, "correct": correct,
                "image": f"images/{image_id}.png", "maps": {}, "overlays": {}, "metrics": {}}
        for m in METHODS:
            Image.fromarray(heatmap(rng, size, lesion), "L").save(
                os.path.join(base, "maps", m, f"{image_id}.png"))
            img.save(os.path.join(base, "overlays", m, f"{image_id}.png"))
            item["maps"][m] = f"maps/{m}/{image_id}.png"
            item["overlays"][m] = f"overlays/{m}/{image_id}.png"
            # as cervix_jax/explain/run.py writes them: NaN where a mask is missing
            item["metrics"][m] = {"roi_area": float(rng.uniform(0.05, 0.6)),
                                  "pointing_game_lesion": float(rng.random() < 0.6),
                                  "pointing_game_os": float(rng.random() < 0.5) if i % 4 else float("nan"),
                                  "iou_lesion": float(rng.uniform(0, 1))}
        items.append(item)
    index = {"split": split, "methods": ["gradcam", *METHODS], "threshold": 0.2,
             "class_names": class_names, "items": items}
    with open(os.path.join(base, "index.json"), "w") as f:
        json.dump(index, f)
    return index


class Running:
    """A review server on a free loopback port, served from a thread."""

    def __init__(self, workdir, **kw):
        self.server = make_server(workdir, port=0, **kw)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def raw(self, request: bytes):
        """Sends raw bytes; returns (status, body)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(request)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), body

    def get(self, path, host="127.0.0.1"):
        return self.raw(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())

    def post(self, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.raw(b"POST /api/rating HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                        + f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                        + data)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def workdir(tmp_path):
    write_workdir(str(tmp_path))
    return str(tmp_path)


@pytest.fixture
def running(workdir):
    servers = []

    def start(**kw):
        servers.append(Running(workdir, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_refuses_non_loopback_hosts(workdir):
    for host in ["0.0.0.0", "192.168.1.7", "::", "example.org"]:
        with pytest.raises(ValueError, match="loopback"):
            serve(workdir, host=host, port=0)
    for host in ["127.0.0.1", "localhost", "::1"]:
        review_server.check_host(host, allow_remote=False)
    review_server.check_host("0.0.0.0", allow_remote=True)


def test_only_split_files_are_served(workdir, running, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    (tmp_path / "explain" / "test" / "images" / "link.png").symlink_to(secret)
    (tmp_path / "explain" / "test" / "images" / "dirlink").symlink_to(tmp_path)
    srv = running()
    code, body = srv.get("/files/images/103.png")
    assert code == 200
    assert body == (tmp_path / "explain" / "test" / "images" / "103.png").read_bytes()
    bad = ["/files/../../secret.txt", "/files/images/../../../secret.txt", "/files/%2e%2e/%2e%2e/secret.txt",
           "/files/..%2f..%2fsecret.txt", "/files/images%2f..%2f..%2f..%2fsecret.txt", f"/files/{secret}",
           f"/files/%2f{str(secret)[1:]}", "/files//etc/passwd", "/files/..\\..\\secret.txt",
           "/files/images/link.png", "/files/images/dirlink/secret.txt", "/files/%252e%252e/secret.txt",
           "/files/images/103.png%00.txt", "/static/../server.py", "/static/%2e%2e/server.py",
           "/../../secret.txt", "http://127.0.0.1/files/../../secret.txt", "/files/"]
    for path in bad:
        code, body = srv.get(path)
        assert code in (403, 404), (path, code)
        assert b"TOP-SECRET" not in body and b"import" not in body, path
    assert srv.get("/files/images/103.png", host="evil.example")[0] == 403  # DNS rebinding


def test_index_paths_escaping_the_split_are_not_served(tmp_path):
    write_workdir(str(tmp_path), n=3, n_wrong=0)
    (tmp_path / "secret.txt").write_text("TOP-SECRET")
    path = tmp_path / "explain" / "test" / "index.json"
    index = json.loads(path.read_text())
    index["items"][0]["maps"]["cam"] = "../../secret.txt"
    index["items"][0]["image"] = "/etc/passwd"
    path.write_text(json.dumps(index))
    srv = Running(str(tmp_path))
    try:
        items = json.loads(srv.get("/api/items?reviewer=eve")[1])["items"]
        first = items[0]
        assert srv.get(first["image"])[0] == 404
        statuses = [srv.get(p["map"])[0] for p in first["panels"]]
        assert sorted(statuses) == [200, 404]
    finally:
        srv.close()


def read_lines(workdir, reviewer):
    with open(os.path.join(workdir, "review", f"ratings-{reviewer}.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_blind_rating_records_real_explainer(workdir, running, tmp_path):
    srv = running(blind=True)
    data = json.loads(srv.get("/api/items?reviewer=alice")[1])
    text = json.dumps(data["items"]).lower()
    assert "cam" not in text and "crm" not in text
    assert len(data["items"]) == 6 and all(it["correct"] for it in data["items"])
    assert {p["label"] for it in data["items"] for p in it["panels"]} == {"A", "B"}
    before = datetime.datetime.now(datetime.timezone.utc)
    shown = {}
    for it in data["items"]:
        for p in it["panels"]:
            code, png = srv.get(p["map"])
            assert code == 200
            shown[(it["id"], p["position"])] = png
            assert srv.post({"reviewer": "alice", "image": it["id"], "position": p["position"],
                             "answer": "meaningful" if p["position"] == 0 else "out_of_roi"})[0] == 200
    lines = read_lines(workdir, "alice")
    assert len(lines) == 12
    orders = set()
    for r in lines:
        assert r["reviewer"] == "alice" and r["split"] == "test" and r["kind"] == "explainer"
        t = datetime.datetime.fromisoformat(r["time"])
        assert t.utcoffset() == datetime.timedelta(0) and t >= before - datetime.timedelta(seconds=1)
        assert r["label"] == "AB"[r["position"]]
        # the map shown at that position is the recorded explainer's map
        real = (tmp_path / "explain" / "test" / "maps" / r["explainer"] / f"{r['image']}.png").read_bytes()
        assert shown[(str(r["image"]), r["position"])] == real
        orders.add((r["image"], r["position"], r["explainer"]))
    first_at_a = {e for _, pos, e in orders if pos == 0}
    assert first_at_a == {"cam", "crm"}, "blind order should vary between images"


def test_non_blind_panels_named_in_fixed_order(running):
    srv = running()
    items = json.loads(srv.get("/api/items?reviewer=bob&all=1")[1])["items"]
    assert len(items) == 8
    for it in items:
        assert [p["explainer"] for p in it["panels"]] == ["cam", "crm"]
        assert [p["label"] for p in it["panels"]] == ["CAM", "CRM"]


def test_bad_ratings_get_400_and_change_nothing(workdir, running):
    srv = running()
    ok = {"reviewer": "alice", "image": 103, "explainer": "crm", "answer": "meaningful"}
    assert srv.post(ok)[0] == 200
    path = os.path.join(workdir, "review", "ratings-alice.jsonl")
    before = open(path, "rb").read()
    bad = [b"{not json", b"\xff\xfe", b"[1, 2]", b'"meaningful"', b"null",
           {**ok, "image": 999}, {**ok, "image": True}, {**ok, "explainer": "gradcam"},
           {**ok, "answer": "great"}, {**ok, "answer": ["meaningful"]}, {**ok, "reviewer": "../alice"},
           {**ok, "reviewer": "alice/x"}, {**ok, "reviewer": ""}, {**ok, "reviewer": 7}, {**ok, "extra": 1},
           {**ok, "position": 0}, {k: v for k, v in ok.items() if k != "explainer"},
           {"reviewer": "alice", "image": 103, "position": 2, "answer": "meaningful"},
           {"reviewer": "alice", "image": 103, "position": True, "answer": "meaningful"},
           {"reviewer": "alice", "image": 104, "kind": "referral", "answer": ["fornix"]},  # 104 is treatable
           {"reviewer": "alice", "image": 106, "kind": "referral", "answer": ["nope"]},
           {"reviewer": "alice", "image": 106, "kind": "referral", "answer": "fornix"},
           {"reviewer": "alice", "image": 106, "kind": "referral", "answer": ["fornix", "fornix"]},
           {"reviewer": "alice", "image": 106, "kind": "other", "answer": "meaningful"}]
    for body in bad:
        code, msg = srv.post(body)
        assert code == 400, (body, code)
        assert b"expected" in msg
    assert srv.post(json.dumps(ok).encode(), content_type="text/plain")[0] == 415
    assert open(path, "rb").read() == before
    assert os.listdir(os.path.dirname(path)) == ["ratings-alice.jsonl"]


def test_two_reviewers_resume_and_last_answer(workdir, running):
    srv = running()
    for who, answer in [("alice", "meaningful"), ("bob", "bad_image"), ("alice", "out_of_roi")]:
        for m in METHODS:
            assert srv.post({"reviewer": who, "image": 102, "explainer": m, "answer": answer})[0] == 200
    for m in METHODS:  # 106 is labelled not treatable: done only with a referral reason
        assert srv.post({"reviewer": "alice", "image": 106, "explainer": m, "answer": "meaningful"})[0] == 200
    state = json.loads(srv.get("/api/items?reviewer=alice")[1])
    assert state["done"] == ["102"]
    assert state["answers"]["102"]["panels"] == {"0": "out_of_roi", "1": "out_of_roi"}
    referral = {"reviewer": "alice", "image": 106, "kind": "referral", "answer": ["tz3", "fornix"]}
    assert srv.post(referral)[0] == 200
    assert json.loads(srv.get("/api/items?reviewer=alice")[1])["done"] == ["102", "106"]
    assert json.loads(srv.get("/api/items?reviewer=bob")[1])["done"] == ["102"]
    assert len(read_lines(workdir, "alice")) == 7 and len(read_lines(workdir, "bob")) == 2
    assert summarize(workdir)["reviewers"]["alice"]["explainers"]["cam"]["reasons"] == [["out_of_roi", 1]]


def test_append_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "review" / "ratings-x.jsonl")
    review_server.append_atomic(path, '{"a": 1}')
    before = open(path, "rb").read()

    def crash(*a):
        raise OSError("killed")

    monkeypatch.setattr(review_server.os, "replace", crash)
    with pytest.raises(OSError):
        review_server.append_atomic(path, '{"a": 2}')
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path / "review") == ["ratings-x.jsonl"]
    review_server.append_atomic(path, '{"a": 3}')
    assert [json.loads(x) for x in open(path)] == [{"a": 1}, {"a": 3}]


def test_summary_against_references(tmp_path):
    workdir = str(tmp_path)
    index = write_workdir(workdir, n=60, size=16, seed=3, n_wrong=5)
    rng = np.random.default_rng(7)
    answers = list(review_server.ANSWERS)
    reasons = list(review_server.REFERRAL_REASONS)
    items = {str(it["id"]): it for it in index["items"]}
    final = {"r1": {}, "r2": {}}
    referral = {"r1": {}, "r2": {}}
    os.makedirs(tmp_path / "review")
    for who in final:
        lines = []
        for image_id, item in items.items():
            for m in METHODS:
                if rng.random() < 0.15:
                    continue  # not rated
                for _ in range(rng.integers(1, 3)):  # sometimes answered twice: last wins
                    a = answers[0] if rng.random() < 0.6 else answers[rng.integers(1, 5)]
                    lines.append({"kind": "explainer", "reviewer": who, "split": "test", "image": item["id"],
                                  "explainer": m, "answer": a, "time": "t"})
                final[who][(image_id, m)] = a
            if item["label"] == 1:
                chosen = sorted(rng.choice(reasons, size=rng.integers(1, 4), replace=False).tolist())
                lines.append({"kind": "referral", "reviewer": who, "split": "test", "image": item["id"],
                              "answer": chosen, "time": "t"})
                referral[who][image_id] = chosen
        lines.append({"kind": "explainer", "reviewer": who, "split": "val", "image": 100,
                      "explainer": "cam", "answer": "bad_image", "time": "t"})  # other split: ignored
        (tmp_path / "review" / f"ratings-{who}.jsonl").write_text(
            "".join(json.dumps(x) + "\n" for x in lines))

    s = summarize(workdir)
    assert s["n_items"] == 60 and s["n_correct"] == 55
    for who in final:
        for m in METHODS:
            got = s["reviewers"][who]["explainers"][m]
            mine = {k[0]: a for k, a in final[who].items() if k[1] == m}
            good = sum(a == "meaningful" for a in mine.values())
            assert (got["rated"], got["meaningful"], got["misplaced"]) == (len(mine), good, len(mine) - good)
            assert got["misplaced_share"] == pytest.approx((len(mine) - good) / len(mine))
            counts = {r: sum(a == r for a in mine.values()) for r in answers[1:]}
            assert dict(map(tuple, got["reasons"])) == {r: c for r, c in counts.items() if c}
            assert [c for _, c in got["reasons"]] == sorted([c for _, c in got["reasons"]], reverse=True)
            y = np.array([mine[i] == "meaningful" for i in sorted(mine)], float)
            for key in ("pointing_game_lesion", "pointing_game_os", "roi_area", "iou_lesion"):
                v = np.array([float(items[i]["metrics"][m][key]) for i in sorted(mine)])
                ok = np.isfinite(v)
                ref = got["metrics"][key]
                assert ref["n_meaningful"] + ref["n_misplaced"] == ok.sum()
                assert ref["correlation"] == pytest.approx(np.corrcoef(y[ok], v[ok])[0, 1], abs=1e-12)
                assert ref["mean_meaningful"] == pytest.approx(v[ok & (y == 1)].mean())
                assert ref["mean_misplaced"] == pytest.approx(v[ok & (y == 0)].mean())
            assert got["metrics"]["pointing_game_os"]["n_meaningful"] < good
            assert got["metrics"]["pointing_game_lesion"]["correlation_kind"] == "phi"
            assert got["metrics"]["roi_area"]["correlation_kind"] == "point_biserial"
        flat = [r for v in referral[who].values() for r in v]
        counts = dict(map(tuple, s["reviewers"][who]["referral_reasons"]))
        assert counts == {r: flat.count(r) for r in set(flat)}
    (pair,) = s["agreement"]
    assert pair["reviewers"] == ["r1", "r2"]
    for m in METHODS:
        common = sorted(k for k in final["r1"] if k[1] == m and k in final["r2"])
        a = [final["r1"][k] for k in common]
        b = [final["r2"][k] for k in common]
        got = pair["explainers"][m]
        assert got["n"] == len(common) > 20
        assert got["kappa"] == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
        ab, bb = [x == "meaningful" for x in a], [x == "meaningful" for x in b]
        assert got["kappa_binary"] == pytest.approx(cohen_kappa_score(ab, bb), abs=1e-12)
    on_disk = json.loads((tmp_path / "review" / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(s))
    md = (tmp_path / "review" / "summary.md").read_text()
    crm = s['reviewers']['r1']['explainers']['crm']
    assert f"{crm['misplaced']}/{crm['rated']}" in md


def test_kappa_and_correlation_edge_cases():
    from cervix_jax.review.summary import cohen_kappa, pearson
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None
    assert cohen_kappa([], []) is None
    assert cohen_kappa(["a", "b", "a"], ["a", "b", "a"]) == pytest.approx(1.0)
    assert pearson([1, 1, 1], [0.2, 0.4, 0.1]) is None
    with pytest.raises(ValueError, match="equal length"):
        cohen_kappa(["a"], [])


# --- issue 15 (10): names, parse errors, timeouts, damaged ratings files, blind mode, NaN items ---

def strict_json(data: bytes):
    """json.loads that refuses NaN/Infinity tokens, as the browser's JSON.parse does."""
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")
    return json.loads(data, parse_constant=refuse)


def test_reviewer_name_with_trailing_newline_refused(workdir, running):
    srv = running()
    body = {"reviewer": "alice\n", "image": 103, "explainer": "cam", "answer": "meaningful"}
    code, msg = srv.post(body)
    assert code == 400 and b"expected" in msg
    assert srv.get("/api/items?reviewer=alice%0A")[0] == 400
    assert srv.get("/api/panel/103/0?reviewer=alice%0A")[0] == 400
    with pytest.raises(ValueError, match="reviewer name"):
        make_server(workdir, port=0, reviewer="alice\n")
    assert not os.path.exists(os.path.join(workdir, "review"))


def test_every_parse_error_gets_an_answer(workdir, running):
    srv = running()
    get = b"GET /api/panel/103/%s?reviewer=a HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    for pos in (b"\xb2", b"\xb9", b"%C2%B2", b"-1", b"99999999999999999999"):
        code, msg = srv.raw(get % pos)
        assert code == 400 and b"expected" in msg, (pos, code)
    assert srv.raw(get % b"2")[0] == 404                      # well-formed, no such panel
    ok = {"reviewer": "a", "image": 103, "explainer": "cam", "answer": "meaningful"}
    huge = json.dumps(ok).replace("103", "9" * 5000).encode()    # past Python's int digit limit
    deep = b'{"reviewer": "a", "image": ' + b"[" * 20000 + b"]" * 20000 + b"}"
    nan = json.dumps({**ok, "image": float("nan")}).encode()
    for body in (huge, deep, nan):
        assert len(body) < review_server.MAX_BODY
        code, msg = srv.post(body)
        assert code == 400 and b"expected" in msg, (body[:40], code)
    assert srv.post(ok)[0] == 200                               # the server still works


def test_idle_and_stalled_connections_are_closed(workdir):
    server = make_server(workdir, port=0, timeout=0.4)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        base = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
        partial = socket.create_connection(("127.0.0.1", port), timeout=10)
        partial.sendall(b"POST /api/rating HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                        b"\r\nContent-Length: 100\r\n\r\n{\"reviewer\"")      # body shorter than stated
        half = socket.create_connection(("127.0.0.1", port), timeout=10)
        half.sendall(b"GET /api/config HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
        for s in idle + [half]:
            assert s.recv(1024) == b""                            # closed by the server
        reply = b""
        while chunk := partial.recv(4096):
            reply += chunk
        assert reply.startswith(b"HTTP/1.0 408") or reply.startswith(b"HTTP/1.1 408"), reply[:40]
        for s in idle + [partial, half]:
            s.close()
        for _ in range(100):
            if threading.active_count() <= base:
                break
            threading.Event().wait(0.05)
        assert threading.active_count() <= base
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ValueError, match="timeout"):
        make_server(workdir, port=0, timeout=0)


def test_bad_bytes_in_a_ratings_file_are_skipped_and_reported(workdir, running, capsys):
    srv = running()
    for m in METHODS:
        assert srv.post({"reviewer": "alice", "image": 102, "explainer": m, "answer": "meaningful"})[0] == 200
    path = os.path.join(workdir, "review", "ratings-alice.jsonl")
    with open(path, "ab") as f:
        f.write(b'{"kind": "explainer", "image": 103, "answer": "bad_\xff"}\n')   # not UTF-8
        f.write(b'{"kind": "explainer", "image": NaN}\n')                          # not strict JSON
    assert srv.post({"reviewer": "alice", "image": 104, "explainer": "cam", "answer": "bad_image"})[0] == 200
    code, body = srv.get("/api/items?reviewer=alice")
    assert code == 200
    state = strict_json(body)
    assert state["skipped_lines"] == [3, 4]
    assert state["answers"]["102"]["panels"] == {"0": "meaningful", "1": "meaningful"}
    assert state["answers"]["104"]["panels"] == {"0": "bad_image"}
    assert "skipped 2 unreadable line(s)" in capsys.readouterr().err
    s = summarize(workdir)
    assert s["reviewers"]["alice"]["explainers"]["cam"]["rated"] == 2
    assert s["skipped"] == {"ratings-alice.jsonl": "skipped unreadable lines [3, 4]"}
    assert "ratings-alice.jsonl" in (Path(workdir) / "review" / "summary.md").read_text()
    strict_json((Path(workdir) / "review" / "summary.json").read_bytes())
    (Path(workdir) / "review" / "ratings-bob\n.jsonl").write_text("")   # an old file with a bad name
    assert "ignored: not a valid reviewer name" in summarize(workdir)["skipped"].values()


def test_blind_mode_serves_panels_only_through_opaque_ids(workdir, running, tmp_path):
    srv = running(blind=True)
    split = tmp_path / "explain" / "test"
    for path in ("/files/index.json", "/files/maps/cam/103.png", "/files/maps/crm/103.png",
                 "/files/overlays/cam/103.png", "/files/images/103.png", "/files/table.md"):
        code, body = srv.get(path)
        assert code == 404, path
        assert b"cam" not in body.lower() and b"crm" not in body.lower()
    seen = b""
    for path in ("/api/config", "/api/items?reviewer=alice&all=1"):
        code, body = srv.get(path)
        assert code == 200
        seen += body
    assert b"cam" not in seen.lower() and b"crm" not in seen.lower() and b"/files/" not in seen
    items = strict_json(srv.get("/api/items?reviewer=alice&all=1")[1])["items"]
    for it in items:
        code, png = srv.get(it["image"])
        assert code == 200 and png == (split / "images" / f"{it['id']}.png").read_bytes()
    # naming a method in a blind answer would reveal its panel: refused
    code, msg = srv.post({"reviewer": "alice", "image": 103, "explainer": "cam", "answer": "meaningful"})
    assert code == 400 and b"position" in msg
    assert srv.post({"reviewer": "alice", "image": 103, "position": 1, "answer": "meaningful"})[0] == 200


def test_refusal_names_the_real_flag(workdir):
    with pytest.raises(ValueError) as err:
        serve(workdir, host="0.0.0.0", port=0)
    assert "--allow_remote" in str(err.value) and "--allow-remote" not in str(err.value)
    import launch
    assert "allow_remote" in launch.flags.FLAGS


def test_items_with_nan_scores_keep_the_page_working(tmp_path, running):
    index = write_workdir(str(tmp_path), n=4, n_wrong=0)
    path = tmp_path / "explain" / "test" / "index.json"
    index["items"][1]["score"] = float("nan")                  # as older explain runs wrote it
    index["items"][2]["score"] = float("inf")
    index["items"][2]["pred"] = None
    index["items"][2]["correct"] = False
    index["items"][2]["flags"] = ["nonfinite_input"]
    path.write_text(json.dumps(index))                          # NaN / Infinity tokens
    srv = Running(str(tmp_path))
    try:
        code, body = srv.get("/api/items?reviewer=eve&all=1")
        assert code == 200
        items = strict_json(body)["items"]
        assert [it["score"] for it in items][1:3] == [None, None]
        assert items[2]["pred"] is None and items[2]["pred_name"] == "n/a"
        assert items[2]["flags"] == ["nonfinite_input"]
    finally:
        srv.close()


# --- the review server fed by real `explain_to_dir` output (not a hand-written index.json) ---

def real_explain_run(root, kind, seed, n=4):
    """WORKDIR/explain/test written by cervix_jax.explain.explain_to_dir on a freshly initialised
    tiny model ("tiny": configs/tiny.py's CNN, CAM + CRM) or paper A's patch model ("patch": CRM only,
    plus its own "weights" map). Image 1 of the tiny run has a NaN pixel."""
    import jax
    import ml_collections as mlc
    from cervix_jax.explain import explain_to_dir
    from cervix_jax.train.task import make_task
    rng = np.random.default_rng(seed)
    if kind == "tiny":
        from configs.tiny import get_config
        config = get_config()
        task, methods = make_task(config), ("cam", "crm")
        shape = tuple(config.data.pad_to)
    else:
        config = mlc.ConfigDict({"data": {"pad_to": (16, 24)}, "model": {
            "name": "patch", "patch_size": 8, "aggregation": "normalized", "mlp_hidden": (16, 8),
            "regulator": "iterative", "reg_lambda": 0.5, "eps_w": 1e-3, "eig_floor": 0.25}})
        task, methods = make_task(config), ("crm",)
        shape = tuple(config.data.pad_to)
    model = task.explainable(task.init(jax.random.PRNGKey(seed), (*shape, 3)))
    examples = []
    for i in range(n):
        image = rng.uniform(0, 1, (*shape, 3)).astype(np.float32)
        display = (image * 255).astype(np.uint8)
        if kind == "tiny" and i == 1:
            image[2, 3, 0] = np.nan
        examples.append({"image": image, "display": display, "label": i % 2, "id": 40 + i})
    out = os.path.join(root, "explain", "test")
    with pytest.warns(UserWarning) if kind == "tiny" else contextlib.nullcontext():
        explain_to_dir(model, examples, out, methods=methods, batch_size=n, auc_steps=2)
    return out


def test_review_of_a_real_explain_run_blind(tmp_path, seed):
    out = real_explain_run(str(tmp_path), "tiny", seed)
    srv = Running(str(tmp_path), blind=True)
    try:
        code, body = srv.get("/api/items?reviewer=alice&all=1")
        assert code == 200
        data = strict_json(body)
        assert [it["id"] for it in data["items"]] == ["40", "41", "42", "43"]
        assert b"cam" not in body.lower() and b"crm" not in body.lower()
        nan_item = data["items"][1]
        assert nan_item["score"] is None and nan_item["pred"] is None and not nan_item["correct"]
        assert "nonfinite_input" in nan_item["flags"]
        for it in data["items"]:
            code, png = srv.get(it["image"])
            assert code == 200 and png == open(os.path.join(out, "images", f"{it['id']}.png"), "rb").read()
            maps = {m: open(os.path.join(out, "maps", m, f"{it['id']}.png"), "rb").read() for m in METHODS}
            shown = {}
            for p in it["panels"]:
                code, shown[p["position"]] = srv.get(p["map"])
                assert code == 200 and shown[p["position"]] in maps.values()
                assert srv.post({"reviewer": "alice", "image": it["id"], "position": p["position"],
                                 "answer": "meaningful"})[0] == 200
            assert len(shown) == 2
        for r in read_lines(str(tmp_path), "alice"):     # the recorded explainer is the one shown
            code, png = srv.get(f"/api/panel/{r['image']}/{r['position']}?reviewer=alice")
            assert png == open(os.path.join(out, "maps", r["explainer"], f"{r['image']}.png"), "rb").read()
    finally:
        srv.close()
    s = summarize(str(tmp_path))
    assert s["n_items"] == 4 and s["reviewers"]["alice"]["explainers"]["crm"]["rated"] == 4
    strict_json((tmp_path / "review" / "summary.json").read_bytes())


def test_review_of_a_real_single_method_patch_run(tmp_path, seed):
    out = real_explain_run(str(tmp_path), "patch", seed)
    index = strict_json(open(os.path.join(out, "index.json"), "rb").read())
    assert index["methods"] == ["crm", "weights"]
    srv = Running(str(tmp_path))
    try:
        data = strict_json(srv.get("/api/items?reviewer=bob&all=1")[1])
        assert len(data["items"]) == 4
        for it in data["items"]:
            assert [(p["position"], p["explainer"], p["label"]) for p in it["panels"]] == [(0, "crm", "CRM")]
            code, png = srv.get(it["panels"][0]["map"])
            with open(os.path.join(out, "maps", "crm", f"{it['id']}.png"), "rb") as f:
                assert code == 200 and png == f.read()
            rating = {"reviewer": "bob", "image": it["id"]}
            assert srv.post({**rating, "position": 0, "answer": "out_of_roi"})[0] == 200
            assert srv.post({**rating, "position": 1, "answer": "meaningful"})[0] == 400
        assert len(strict_json(srv.get("/api/items?reviewer=bob&all=1")[1])["done"]) >= 2
    finally:
        srv.close()
    s = summarize(str(tmp_path))
    assert s["methods"] == ["crm"] and s["reviewers"]["bob"]["explainers"]["crm"]["misplaced"] == 4
