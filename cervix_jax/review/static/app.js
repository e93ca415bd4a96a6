// cervix-jax expert review page. Plain JS, no build step. Talks to cervix_jax/review/server.py.
"use strict";

const PANEL_KEYS = [
  {meaningful: "1", out_of_roi: "q", insufficient_coverage: "w", incorrect_label: "e", bad_image: "r"},
  {meaningful: "2", out_of_roi: "a", insufficient_coverage: "s", incorrect_label: "d", bad_image: "f"},
];
const S = {config: null, reviewer: null, all: false, items: [], answers: {}, index: 0,
           threshold: 0.2, pixels: new Map()};
const $ = (id) => document.getElementById(id);

function status(msg) { $("status").textContent = msg || ""; }

async function getJSON(url) {
  const r = await fetch(url, {cache: "no-store"});
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status} ${await r.text()}`);
  return r.json();
}

// Matplotlib's "jet" as piecewise-linear channels of v in [0, 1].
function jet(v) {
  const c = (x) => Math.max(0, Math.min(1, x));
  return [c(1.5 - Math.abs(4 * v - 3)), c(1.5 - Math.abs(4 * v - 2)), c(1.5 - Math.abs(4 * v - 1))];
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`cannot load ${url}`));
    img.src = url;
  });
}

// RGBA pixels of an image at width x height (cached per url).
async function pixels(url, width, height) {
  const key = `${url}|${width}x${height}`;
  if (!S.pixels.has(key)) {
    S.pixels.set(key, loadImage(url).then((img) => {
      const w = width || img.naturalWidth, h = height || img.naturalHeight;
      const c = document.createElement("canvas");
      c.width = w; c.height = h;
      const ctx = c.getContext("2d");
      ctx.drawImage(img, 0, 0, w, h);
      return ctx.getImageData(0, 0, w, h);
    }));
  }
  return S.pixels.get(key);
}

// Image with the JET heatmap blended (alpha 0.5) where map / 255 >= threshold.
async function drawOverlay(canvas, item, panel) {
  const base = await pixels(item.image);
  const map = await pixels(panel.map, base.width, base.height);
  canvas.width = base.width; canvas.height = base.height;
  const out = new ImageData(base.width, base.height);
  const t = S.threshold, b = base.data, m = map.data, o = out.data;
  for (let i = 0; i < b.length; i += 4) {
    const v = m[i] / 255;
    if (v >= t && v > 0) {
      const [r, g, bl] = jet(v);
      o[i] = 0.5 * b[i] + 127.5 * r; o[i + 1] = 0.5 * b[i + 1] + 127.5 * g; o[i + 2] = 0.5 * b[i + 2] + 127.5 * bl;
    } else {
      o[i] = b[i]; o[i + 1] = b[i + 1]; o[i + 2] = b[i + 2];
    }
    o[i + 3] = 255;
  }
  canvas.getContext("2d").putImageData(out, 0, 0);
}

function current() { return S.items[S.index]; }
function entry(id) { return S.answers[id] || (S.answers[id] = {panels: {}, referral: null}); }

function isDone(item) {
  const e = S.answers[item.id];
  if (!e || item.panels.some((p) => !(String(p.position) in e.panels))) return false;
  return !item.referral || (Array.isArray(e.referral) && e.referral.length > 0);
}

function renderProgress() {
  const n = S.items.filter(isDone).length;
  $("progress").textContent = `${n} of ${S.items.length} reviewed`;
  const item = current();
  $("done-mark").textContent = item && isDone(item) ? "this image is reviewed" : "";
}

function renderAnswers() {
  const item = current();
  const e = entry(item.id);
  document.querySelectorAll(".answers button").forEach((btn) => {
    const chosen = e.panels[btn.dataset.position] === btn.dataset.answer;
    btn.classList.toggle("chosen", chosen);
    btn.setAttribute("aria-pressed", String(chosen));
  });
  const chosen = new Set(e.referral || []);
  document.querySelectorAll("#referral-options input").forEach((box) => { box.checked = chosen.has(box.value); });
  renderProgress();
}

function render() {
  const item = current();
  if (!item) {
    $("item-info").textContent = S.all ? "No images in this split." : "No correctly classified images in this split.";
    $("panels").replaceChildren(); $("referral").hidden = true; renderProgress();
    return;
  }
  const info = $("item-info");
  const wrong = item.correct ? "" : ' <span class="wrong">(misclassified)</span>';
  info.innerHTML = "";
  info.insertAdjacentHTML("beforeend",
    `Image ${S.index + 1} of ${S.items.length} (id <code></code>): true label <b class="true"></b>, ` +
    `predicted <b class="pred"></b> (score <span class="score"></span>)${wrong}`);
  info.querySelector("code").textContent = item.id;
  info.querySelector(".true").textContent = item.label_name;
  info.querySelector(".pred").textContent = item.pred_name;
  // score is null when the model gave no finite score (flagged by the explainers)
  info.querySelector(".score").textContent = Number.isFinite(item.score) ? item.score.toFixed(3) : "n/a";
  if (item.flags && item.flags.length) {
    const warn = document.createElement("span");
    warn.className = "wrong flags";
    warn.textContent = ` flagged: ${item.flags.join(", ")}`;
    info.append(warn);
  }

  const panels = [];
  const fig = document.createElement("figure");
  fig.className = "panel"; fig.id = "panel-image";
  fig.innerHTML = "<figcaption>Image</figcaption>";
  const img = document.createElement("img");
  img.src = item.image; img.alt = `image ${item.id}`;
  fig.append(img);
  panels.push(fig);
  for (const p of item.panels) {
    const f = document.createElement("figure");
    f.className = "panel heatmap"; f.dataset.position = p.position;
    const cap = document.createElement("figcaption");
    cap.textContent = `Heatmap ${p.label}`;
    const canvas = document.createElement("canvas");
    canvas.setAttribute("aria-label", `heatmap ${p.label}`);
    const answers = document.createElement("div");
    answers.className = "answers";
    for (const [value, text] of Object.entries(S.config.answers)) {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.position = p.position; b.dataset.answer = value;
      if (value !== "meaningful") b.classList.add("misplaced");
      const key = (PANEL_KEYS[p.position] || {})[value];
      b.textContent = key ? `${text} (${key})` : text;
      b.addEventListener("click", () => rate(p.position, value));
      answers.append(b);
    }
    f.append(cap, canvas, answers);
    panels.push(f);
    drawOverlay(canvas, item, p).catch((err) => status(err.message));
  }
  $("panels").replaceChildren(...panels);
  $("referral").hidden = !item.referral;
  renderAnswers();
}

function redrawOverlays() {
  const item = current();
  if (!item) return;
  document.querySelectorAll("figure.heatmap").forEach((f) => {
    const p = item.panels[Number(f.dataset.position)];
    drawOverlay(f.querySelector("canvas"), item, p).catch((err) => status(err.message));
  });
}

async function post(body) {
  const r = await fetch("/api/rating", {method: "POST", headers: {"Content-Type": "application/json"},
                                        body: JSON.stringify(body)});
  if (!r.ok) throw new Error(`rating not saved: HTTP ${r.status} ${await r.text()}`);
  status("");
}

async function rate(position, answer) {
  const item = current();
  if (!item || position >= item.panels.length) return;
  try {
    await post({reviewer: S.reviewer, image: item.id, kind: "explainer", position, answer});
    entry(item.id).panels[String(position)] = answer;
    renderAnswers();
  } catch (err) { status(err.message); }
}

// Referral answers carry the image's whole set of reasons. The set is updated locally at once (a
// quick second click builds on the first) and the posts are sent one after another, in order, so
// the last line in the ratings file is always the latest set.
let referralPosts = Promise.resolve();

function toggleReferral(value, on) {
  const item = current();
  const chosen = new Set(entry(item.id).referral || []);
  if (on) chosen.add(value); else chosen.delete(value);
  const list = Object.keys(S.config.referral_reasons).filter((k) => chosen.has(k));
  entry(item.id).referral = list;
  renderAnswers();
  referralPosts = referralPosts
    .then(() => post({reviewer: S.reviewer, image: item.id, kind: "referral", answer: list}))
    .catch((err) => status(err.message));
  return referralPosts;
}

function go(index) {
  if (index < 0 || index >= S.items.length) return;
  S.index = index;
  render();
}

function nextOpen() {
  for (let k = 1; k <= S.items.length; k++) {
    const i = (S.index + k) % S.items.length;
    if (!isDone(S.items[i])) return go(i);
  }
}

function setThreshold(pct) {
  pct = Math.max(0, Math.min(100, Math.round(pct)));
  S.threshold = pct / 100;
  $("threshold").value = pct;
  $("threshold-value").textContent = `${pct}%`;
  redrawOverlays();
}

async function loadItems(keepId) {
  const data = await getJSON(`/api/items?reviewer=${encodeURIComponent(S.reviewer)}&all=${S.all ? 1 : 0}`);
  S.items = data.items;
  S.answers = data.answers;
  if (data.skipped_lines && data.skipped_lines.length) {
    status(`warning: ${data.skipped_lines.length} unreadable line(s) of your ratings file were skipped ` +
           `(lines ${data.skipped_lines.slice(0, 10).join(", ")})`);
  }
  let index = S.items.findIndex((it) => it.id === keepId);
  if (index < 0) index = S.items.findIndex((it) => !isDone(it));  // resume at the first open image
  S.index = Math.max(0, index);
  render();
}

function onKey(ev) {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const t = ev.target;
  if (t && (t.tagName === "INPUT" && t.type !== "checkbox" && t.type !== "range" || t.tagName === "TEXTAREA")) return;
  const k = ev.key;
  if (t && t.type === "range" && k.startsWith("Arrow")) return;  // the slider's own keys
  for (const [pos, keys] of PANEL_KEYS.entries()) {
    for (const [answer, key] of Object.entries(keys)) {
      if (k === key) { ev.preventDefault(); return rate(pos, answer); }
    }
  }
  if (k === "n" || k === "ArrowRight") { ev.preventDefault(); go(S.index + 1); }
  else if (k === "p" || k === "ArrowLeft") { ev.preventDefault(); go(S.index - 1); }
  else if (k === "u") nextOpen();
  else if (k === "[") setThreshold(S.threshold * 100 - 5);
  else if (k === "]") setThreshold(S.threshold * 100 + 5);
}

async function start() {
  $("reviewer-name").textContent = `reviewer: ${S.reviewer}` + (S.config.blind ? " (blind)" : "");
  $("review").hidden = false;
  const opts = $("referral-options");
  for (const [value, text] of Object.entries(S.config.referral_reasons)) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox"; box.value = value; box.name = "referral";
    box.addEventListener("change", () => toggleReferral(value, box.checked));
    label.append(box, " " + text);
    opts.append(label);
  }
  $("prev").addEventListener("click", () => go(S.index - 1));
  $("next").addEventListener("click", () => go(S.index + 1));
  $("next-open").addEventListener("click", nextOpen);
  $("threshold").addEventListener("input", (ev) => setThreshold(Number(ev.target.value)));
  $("show-all").checked = S.all;
  $("show-all").addEventListener("change", (ev) => {
    S.all = ev.target.checked;
    const url = new URL(location.href);
    if (S.all) url.searchParams.set("all", "1"); else url.searchParams.delete("all");
    history.replaceState(null, "", url);
    loadItems(current() && current().id).catch((err) => status(err.message));
  });
  document.addEventListener("keydown", onKey);
  setThreshold(100 * (S.config.threshold ?? 0.2));
  await loadItems(null);
}

async function init() {
  S.config = await getJSON("/api/config");
  const params = new URLSearchParams(location.search);
  S.all = params.get("all") === "1";
  S.reviewer = params.get("reviewer") || S.config.reviewer || localStorage.getItem("cervix-review-reviewer");
  if (!S.reviewer) {
    $("login").hidden = false;
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const name = $("login-name").value.trim();
      localStorage.setItem("cervix-review-reviewer", name);
      const url = new URL(location.href);
      url.searchParams.set("reviewer", name);
      location.href = url.toString();
    });
    return;
  }
  await start();
}

init().catch((err) => status(err.message));
