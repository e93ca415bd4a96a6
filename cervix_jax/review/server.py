"""Expert review server: a local web page to rate CAM/CRM heatmaps as in paper B, Section 4.3.

Standard library only. Reads ``WORKDIR/explain/<split>/index.json`` (docs/internals.md), serves
the page in ``static/`` and a small JSON API, and appends every answer to
``WORKDIR/review/ratings-<reviewer>.jsonl`` atomically. Only files under ``WORKDIR/explain/<split>/``
are ever served. In blind mode the page gets images and panels only through opaque
``/api/image/<id>`` and ``/api/panel/<id>/<position>`` URLs, and nothing under ``/files/``.
Every response body is strict JSON (no NaN tokens). See docs/review.md.
"""
from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import json
import math
import os
import random
import re
import signal
import socket
import sys
import tempfile
import threading
import urllib.parse
import webbrowser

REVIEW_METHODS = ("cam", "crm")

# Paper B, Section 4.3: the expert's judgment of one heatmap.
ANSWERS = {
    "meaningful": "meaningful",
    "out_of_roi": "out of the region of interest",
    "insufficient_coverage": "insufficient coverage of the RoI",
    "incorrect_label": "incorrect ground-truth label",
    "bad_image": "bad image",
}
# Paper B, Table 3: why a woman was referred (image labelled "not treatable").
REFERRAL_REASONS = {
    "endocervical_canal": "lesion extends into the endocervical canal",
    "fornix": "lesion extends into the fornix",
    "too_large": "lesion too large for ablation",
    "invasive_or_glandular": "suspect invasive or glandular disease",
    "tz1_ectopy_too_large": "type 1 TZ, ectopy too large",
    "tz2_scj_out_of_reach": "type 2 TZ, SCJ out of reach",
    "tz3": "type 3 TZ",
    "cervix_distorted": "cervix distorted",
    "vaginal_wall_close": "vaginal wall close",
    "large_polyp": "large polyp",
}
REVIEWER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
MAX_BODY = 64 * 1024
# Seconds a connection may stay silent (headers, body, or idle between keep-alive requests) before
# the server closes it: idle or stalled clients do not hold a thread each forever.
SOCKET_TIMEOUT = 30.0


class RatingError(ValueError):
    """A rating that does not follow the schema (answered with HTTP 400)."""


def is_referral_item(item, class_names):
    """True when the item's true label is the "not treatable" (referral) class."""
    label = int(item["label"])
    if class_names and 0 <= label < len(class_names):
        return bool(re.search(r"not.?treatable|referr?al", str(class_names[label]), re.I))
    return label == 1


def panel_order(methods, reviewer, split, image_id, blind):
    """The explainers in the order shown for one image: shuffled per (reviewer, image) if blind."""
    methods = list(methods)
    if blind:
        seed = hashlib.sha256(f"{reviewer}\0{split}\0{image_id}".encode()).digest()
        random.Random(seed).shuffle(methods)
    return methods


def panel_labels(methods, blind):
    """Labels shown above the panels: "A", "B", ... when blind, else the method names."""
    return [chr(ord("A") + i) if blind else m.upper() for i, m in enumerate(methods)]


def valid_reviewer(name) -> bool:
    """True when ``name`` is a whole reviewer name (``fullmatch``: no trailing newline)."""
    return isinstance(name, str) and REVIEWER_PATTERN.fullmatch(name) is not None


def ratings_path(workdir, reviewer):
    return os.path.join(workdir, "review", f"ratings-{reviewer}.jsonl")


def read_ratings(path):
    """(records, skipped) of one ratings file: the JSON objects in order, and the 1-based numbers of
    the lines skipped because they are not strict UTF-8, not JSON (NaN tokens included) or not an
    object. A missing file gives ([], [])."""
    if not os.path.exists(path):
        return [], []
    records, skipped = [], []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
            except (UnicodeDecodeError, ValueError, RecursionError):
                skipped.append(number)
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                skipped.append(number)
    return records, skipped


def _refuse_constant(name):
    raise ValueError(f"expected strict JSON, found {name}")


def json_safe(obj):
    """``obj`` with every non-finite float replaced by None (so ``allow_nan=False`` dumps it)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def finite_or_none(x):
    """float(x) if it is a finite number, else None (NaN, inf, None, strings...)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def append_atomic(path, line):
    """Appends one line: writes old content + line to a temp file in the same folder, fsyncs, renames."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    old = b""
    if os.path.exists(path):
        with open(path, "rb") as f:
            old = f.read()
        if old and not old.endswith(b"\n"):
            old += b"\n"
    fd, tmp = tempfile.mkstemp(prefix=".ratings-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(old + line.encode("utf-8") + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_index(out_dir):
    """The one reader of an explain folder's ``index.json`` (written by ``explain.run.explain_to_dir``):
    reads it and checks its structure; returns the index dict. Used by the review page, its summary
    and the reports."""
    path = os.path.join(out_dir, "index.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"expected the explainers' index at {path}; found no such file "
            f"(run `launch.py explain` first)")
    with open(path, encoding="utf-8") as f:
        index = json.load(f)   # also reads the NaN tokens older explain runs wrote
    if not isinstance(index, dict) or not isinstance(index.get("items"), list):
        raise ValueError(f"{path}: expected an object with a list under 'items'")
    for i, item in enumerate(index["items"]):
        for key in ("id", "label", "score", "pred", "correct", "image", "maps"):
            if key not in item:
                raise ValueError(f"{path}: items[{i}] lacks key {key!r}")
    return index


def load_index(workdir, split):
    """Reads and checks ``WORKDIR/explain/<split>/index.json`` for review; returns (root, index, methods)."""
    root = os.path.realpath(os.path.join(workdir, "explain", split))
    path = os.path.join(root, "index.json")
    index = read_index(root)
    methods = [m for m in REVIEW_METHODS if m in index.get("methods", [])]
    if not methods:
        raise ValueError(f"{path}: expected 'methods' to include one of {list(REVIEW_METHODS)}, "
                         f"found {index.get('methods')}")
    for i, item in enumerate(index["items"]):
        for m in methods:
            if m not in item["maps"]:
                raise ValueError(f"{path}: items[{i}] (id {item['id']}) has no map for method {m!r}")
    return root, index, methods


def check_host(host, allow_remote):
    """Raises unless ``host`` is a loopback address (or ``allow_remote`` is set)."""
    if allow_remote or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"refusing to bind the review server to {host!r}: expected a loopback address "
            "(127.0.0.1, ::1 or localhost). The rating endpoint has no authentication; pass "
            "allow_remote=True (--allow_remote) only on a trusted network.")


class ReviewState:
    """The index, the blind mapping and the ratings files of one review session."""

    def __init__(self, workdir, split, reviewer, blind):
        if reviewer is not None and not valid_reviewer(reviewer):
            raise ValueError(f"reviewer name {reviewer!r}: expected letters, digits, '_' or '-' "
                             f"(pattern {REVIEWER_PATTERN.pattern})")
        self.workdir = os.path.abspath(workdir)
        self.split = split
        self.reviewer = reviewer
        self.blind = blind
        self.root, self.index, self.methods = load_index(self.workdir, split)
        self.class_names = list(self.index.get("class_names") or [])
        self.items = {str(item["id"]): item for item in self.index["items"]}
        self.lock = threading.Lock()
        self.warned = set()   # (ratings file, skipped lines) already reported on stderr

    def order(self, reviewer, image_id):
        return panel_order(self.methods, reviewer, self.split, image_id, self.blind)

    def safe_file(self, rel):
        """Absolute path of ``rel`` inside the split folder, or None if it is not a file there."""
        if not rel or "\0" in rel or "\\" in rel or rel.startswith("/"):
            return None
        if any(part in ("", ".", "..") for part in rel.split("/")):
            return None
        path = os.path.realpath(os.path.join(self.root, rel))
        if os.path.commonpath([path, self.root]) != self.root or not os.path.isfile(path):
            return None
        return path

    def config(self):
        return {
            "split": self.split, "reviewer": self.reviewer, "blind": self.blind,
            "n_panels": len(self.methods),
            "threshold": float(self.index.get("threshold", 0.2)),
            "class_names": self.class_names,
            "answers": ANSWERS, "referral_reasons": REFERRAL_REASONS,
        }

    def item_view(self, item, reviewer):
        """What the page may know of one item (no method names when blind)."""
        image_id = str(item["id"])
        methods = self.order(reviewer, image_id)
        labels = panel_labels(methods, self.blind)
        quoted = urllib.parse.quote(image_id, safe="")
        who = urllib.parse.quote(reviewer, safe="")
        panels = []
        for pos, (method, label) in enumerate(zip(methods, labels)):
            panel = {"position": pos, "label": label, "map": f"/api/panel/{quoted}/{pos}?reviewer={who}"}
            if not self.blind:
                panel["explainer"] = method
            panels.append(panel)
        names = self.class_names

        def name(k):
            if k is None:
                return "n/a"
            k = int(k)
            return names[k] if 0 <= k < len(names) else str(k)

        pred = item["pred"] if isinstance(item["pred"], int) and not isinstance(item["pred"], bool) else None
        return {
            "id": image_id, "label": int(item["label"]), "label_name": name(item["label"]),
            "pred": pred, "pred_name": name(pred),
            "score": finite_or_none(item["score"]), "correct": bool(item["correct"]),
            "flags": self.flags_view(item),
            "image": f"/api/image/{quoted}",
            "referral": is_referral_item(item, names), "panels": panels,
        }

    def flags_view(self, item):
        """The item's flags (e.g. "nonfinite_input"); when blind, without the method names that
        per-method flags ("nonfinite_map:cam") carry."""
        flags = [str(f) for f in item.get("flags") or []]
        if self.blind:
            flags = list(dict.fromkeys(f.split(":")[0] for f in flags))
        return flags

    def answers(self, reviewer):
        """(Last answers of a reviewer on this split: {image: {"panels": {pos: answer}, "referral":
        [...]}}, numbers of the unreadable lines skipped in the reviewer's ratings file)."""
        out = {}
        path = ratings_path(self.workdir, reviewer)
        records, skipped = read_ratings(path)
        if skipped and (path, tuple(skipped)) not in self.warned:
            self.warned.add((path, tuple(skipped)))
            print(f"review: WARNING: {path}: skipped {len(skipped)} unreadable line(s) "
                  f"(not UTF-8 or not a JSON object): {skipped[:10]}", file=sys.stderr)
        for r in records:
            image_id = str(r.get("image"))
            if r.get("split") != self.split or image_id not in self.items:
                continue
            entry = out.setdefault(image_id, {"panels": {}, "referral": None})
            if r.get("kind") == "referral":
                entry["referral"] = r.get("answer")
            elif r.get("explainer") in self.methods:
                pos = self.order(reviewer, image_id).index(r["explainer"])
                entry["panels"][str(pos)] = r.get("answer")
        return out, skipped

    def is_done(self, image_id, entry):
        if entry is None or len(entry["panels"]) < len(self.methods):
            return False
        return bool(entry["referral"]) or not is_referral_item(self.items[image_id], self.class_names)

    def items_view(self, reviewer, include_all):
        chosen = [it for it in self.index["items"] if include_all or bool(it["correct"])]
        answers, skipped = self.answers(reviewer)
        done = [str(it["id"]) for it in chosen if self.is_done(str(it["id"]), answers.get(str(it["id"])))]
        return {"items": [self.item_view(it, reviewer) for it in chosen],
                "answers": answers, "done": done, "skipped_lines": skipped}

    def validate(self, body):
        """Checks a posted rating; returns the record to store or raises RatingError."""
        if not isinstance(body, dict):
            raise RatingError(f"expected a JSON object, found {type(body).__name__}")
        allowed = {"reviewer", "image", "kind", "position", "explainer", "answer"}
        extra = set(body) - allowed
        if extra:
            raise RatingError(f"unexpected keys {sorted(extra)}; allowed: {sorted(allowed)}")
        reviewer = body.get("reviewer")
        if not valid_reviewer(reviewer):
            raise RatingError(f"reviewer: expected a name matching {REVIEWER_PATTERN.pattern}, "
                              f"found {reviewer!r}")
        image_id = body.get("image")
        if (not isinstance(image_id, (str, int)) or isinstance(image_id, bool)
                or str(image_id) not in self.items):
            raise RatingError(f"image: expected an id from index.json, found {image_id!r}")
        image_id = str(image_id)
        item = self.items[image_id]
        record = {"reviewer": reviewer,
                  "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                  "split": self.split, "image": item["id"]}
        kind = body.get("kind", "explainer")
        answer = body.get("answer")
        if kind == "referral":
            if "position" in body or "explainer" in body:
                raise RatingError("a referral answer is per image: expected no 'position' or 'explainer'")
            if not is_referral_item(item, self.class_names):
                raise RatingError(f"referral reasons: expected an image labelled not treatable, found image "
                                  f"{image_id} with label {item['label']}")
            if (not isinstance(answer, list) or len(set(map(str, answer))) != len(answer)
                    or any(not isinstance(a, str) or a not in REFERRAL_REASONS for a in answer)):
                raise RatingError(f"answer: expected a list of distinct referral reasons from "
                                  f"{sorted(REFERRAL_REASONS)}, found {answer!r}")
            record.update(kind="referral", answer=answer)
            return record
        if kind != "explainer":
            raise RatingError(f"kind: expected 'explainer' or 'referral', found {kind!r}")
        if not isinstance(answer, str) or answer not in ANSWERS:
            raise RatingError(f"answer: expected one of {sorted(ANSWERS)}, found {answer!r}")
        order = self.order(reviewer, image_id)
        if self.blind and "explainer" in body:
            raise RatingError("blind review: expected 'position' (the shown panel), found 'explainer' "
                              "(the answer would tell which panel is which method)")
        if ("position" in body) == ("explainer" in body):
            raise RatingError("expected exactly one of 'position' (shown panel) or 'explainer'")
        if "position" in body:
            pos = body["position"]
            if not isinstance(pos, int) or isinstance(pos, bool) or not 0 <= pos < len(order):
                raise RatingError(f"position: expected an integer in [0, {len(order)}), found {pos!r}")
        else:
            if body["explainer"] not in order:
                raise RatingError(f"explainer: expected one of {order}, found {body['explainer']!r}")
            pos = order.index(body["explainer"])
        record.update(kind="explainer", explainer=order[pos], position=pos,
                      label=panel_labels(order, self.blind)[pos], answer=answer)
        return record

    def record(self, body):
        """Validates and appends one rating; returns the stored record."""
        record = self.validate(body)
        with self.lock:
            append_atomic(ratings_path(self.workdir, record["reviewer"]),
                          json.dumps(record, ensure_ascii=False, sort_keys=True, allow_nan=False))
        return record


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "cervix-jax-review"
    timeout = SOCKET_TIMEOUT  # socket timeout (StreamRequestHandler.setup), set per server
    state: ReviewState = None  # set per server by make_server
    allowed_hosts: frozenset | None = None

    def log_message(self, format, *args):  # quiet; errors are answered to the client
        pass

    def send_bytes(self, code, data, content_type):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_json(self, code, obj):
        data = json.dumps(json_safe(obj), allow_nan=False).encode("utf-8")
        self.send_bytes(code, data, "application/json")

    def send_error_json(self, code, message):
        self.send_json(code, {"error": message})

    def send_file(self, path):
        ext = os.path.splitext(path)[1].lower()
        with open(path, "rb") as f:
            data = f.read()
        self.send_bytes(200, data, IMAGE_TYPES.get(ext, "application/octet-stream"))

    def host_ok(self):
        if self.allowed_hosts is None:
            return True
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        return host in self.allowed_hosts

    def reviewer_param(self, query):
        reviewer = (query.get("reviewer") or [""])[0]
        if not valid_reviewer(reviewer):
            raise RatingError(f"reviewer: expected a name matching {REVIEWER_PATTERN.pattern}, "
                              f"found {reviewer!r}")
        return reviewer

    def do_GET(self):
        self.answer(self.get)

    do_HEAD = do_GET

    def do_POST(self):
        self.answer(self.post)

    def answer(self, handler):
        """Runs ``handler``; anything it did not answer itself still gets an answer: 400 for a request
        that cannot be parsed, 408 for a client too slow to send its body, 500 for a server fault."""
        try:
            handler()
        except (RatingError, ValueError, RecursionError, UnicodeError) as e:
            self.send_error_json(400, f"expected a well-formed request: {type(e).__name__}: {e}")
        except TimeoutError:
            self.close_connection = True
            self.send_error_json(408, f"expected the request body within {self.timeout} s")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:   # noqa: BLE001 - an answer rather than a dropped connection
            print(f"review: ERROR answering {self.command} {self.path!r}: {type(e).__name__}: {e}",
                  file=sys.stderr)
            self.send_error_json(500, f"server error: {type(e).__name__}")

    def get(self):
        if not self.host_ok():
            return self.send_error_json(403, "unexpected Host header")
        parts = urllib.parse.urlsplit(self.path)
        path, query = parts.path, urllib.parse.parse_qs(parts.query)
        st = self.state
        try:
            if path in STATIC_FILES:
                name, ctype = STATIC_FILES[path]
                with open(os.path.join(STATIC_DIR, name), "rb") as f:
                    return self.send_bytes(200, f.read(), ctype)
            if path == "/api/config":
                return self.send_json(200, st.config())
            if path == "/api/items":
                include_all = (query.get("all") or ["0"])[0] == "1"
                return self.send_json(200, st.items_view(self.reviewer_param(query), include_all))
            if path.startswith("/api/panel/"):
                rest = path[len("/api/panel/"):].split("/")
                if len(rest) != 2:
                    return self.send_error_json(404, "expected /api/panel/<image>/<position>")
                image_id, pos = urllib.parse.unquote(rest[0]), rest[1]
                order = st.order(self.reviewer_param(query), image_id)
                # isascii: '\u00b2'.isdigit() is true but int('\u00b2') fails
                if not (pos.isascii() and pos.isdigit() and len(pos) <= 3):
                    raise RatingError(f"position: expected a small decimal integer, found {pos!r}")
                if image_id not in st.items or int(pos) >= len(order):
                    return self.send_error_json(404, f"no panel {pos!r} for image {image_id!r}")
                file = st.safe_file(str(st.items[image_id]["maps"][order[int(pos)]]))
                if file is None:
                    return self.send_error_json(404, "map file missing or outside the split folder")
                return self.send_file(file)
            if path.startswith("/api/image/"):
                image_id = urllib.parse.unquote(path[len("/api/image/"):])
                if image_id not in st.items:
                    return self.send_error_json(404, f"no image {image_id!r} in index.json")
                file = st.safe_file(str(st.items[image_id]["image"]))
                if file is None:
                    return self.send_error_json(404, "image file missing or outside the split folder")
                return self.send_file(file)
            if path.startswith("/files/"):
                if st.blind:   # index.json and maps/<method>/ would tell which panel is which
                    return self.send_error_json(404, "blind review: files are served only through "
                                                     "/api/image/ and /api/panel/")
                file = st.safe_file(urllib.parse.unquote(path[len("/files/"):]))
                if file is None:
                    return self.send_error_json(404, "not a file under the explain split folder")
                return self.send_file(file)
        except RatingError as e:
            return self.send_error_json(400, str(e))
        return self.send_error_json(404, f"no such page: {path}")

    def post(self):
        if not self.host_ok():
            return self.send_error_json(403, "unexpected Host header")
        if urllib.parse.urlsplit(self.path).path != "/api/rating":
            return self.send_error_json(404, "the only write endpoint is POST /api/rating")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return self.send_error_json(415, f"expected Content-Type application/json, found {ctype!r}")
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            return self.send_error_json(411, "expected a Content-Length header")
        if not 0 <= length <= MAX_BODY:
            return self.send_error_json(413, f"expected a body of at most {MAX_BODY} bytes, found {length}")
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            # ValueError: bad JSON, NaN, or an integer past Python's digit limit; RecursionError: deep nesting
            return self.send_error_json(400, f"expected a JSON rating, found invalid JSON: "
                                             f"{type(e).__name__}: {str(e)[:200]}")
        try:
            record = self.state.record(body)
        except RatingError as e:
            return self.send_error_json(400, str(e))
        except OSError as e:
            return self.send_error_json(500, f"rating not saved: {e}")
        self.send_json(200, {"ok": True, "label": record.get("label")})


def make_server(workdir, *, split="test", port=8765, host="127.0.0.1", reviewer=None,
                blind=False, allow_remote=False, timeout=SOCKET_TIMEOUT):
    """Builds (without starting) the review server; ``port=0`` picks a free port. ``timeout``: seconds
    a connection may stay silent before the server closes it."""
    check_host(host, allow_remote)
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout: expected seconds > 0, found {timeout!r}")
    state = ReviewState(workdir, split, reviewer, blind)
    allowed = None if allow_remote else frozenset({"localhost", "127.0.0.1", "::1", host.lower()})
    handler = type("ReviewHandler", (Handler,), {"state": state, "allowed_hosts": allowed,
                                                 "timeout": float(timeout)})
    server_cls = http.server.ThreadingHTTPServer
    if ":" in host:
        server_cls = type("ReviewServer6", (server_cls,), {"address_family": socket.AF_INET6})
    server = server_cls((host, port), handler)
    server.daemon_threads = True
    server.state = state
    return server


def page_url(server, reviewer=None):
    host, port = server.server_address[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/" + (f"?reviewer={urllib.parse.quote(reviewer)}" if reviewer else "")


def serve(workdir, *, split="test", port=8765, host="127.0.0.1", reviewer=None, blind=False,
          allow_remote=False, open_browser=False):
    """Serves the review page until interrupted (Ctrl-C)."""
    server = make_server(workdir, split=split, port=port, host=host, reviewer=reviewer,
                         blind=blind, allow_remote=allow_remote)
    url = page_url(server, reviewer)
    items = server.state.index["items"]
    n_correct = sum(bool(it["correct"]) for it in items)
    print(f"review: split {split!r}, {n_correct} of {len(items)} images correctly classified, at {url}\n"
          f"ratings go to {os.path.join(server.state.workdir, 'review')}; Ctrl-C stops the server")
    if open_browser:
        webbrowser.open(url)
    previous = _stop_on_signals()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_on_signals() -> dict:
    """SIGINT and SIGTERM stop the server cleanly (its workdir lock released), also when it was started
    from a script's background job, where the shell makes the process ignore SIGINT. Returns the
    handlers it replaced; nothing is installed outside the main thread (tests run servers in threads)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    def stop(signum, frame):
        raise KeyboardInterrupt
    return {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
