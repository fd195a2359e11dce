"""A static HTML page for labelling judge pairs by hand; it saves labels in the JSONL of `validate.read_labels`.

    vlmflow judge label --pairs pairs.jsonl --prefill llm --out label.html     (or `write_label_page(...)`)

The page is one self-contained file (no server, no network): it shows each pair's image and question when given
(re-prompting pairs: ``vlmflow.human_eval``), its reference and candidate descriptions, the two object lists (pre-filled from a judge's answer when given, editable: one object per line) and,
for every reference object, a menu to pick the candidate object it matches (or "lost"). "Download labels.jsonl"
writes every pair in the human-label format; progress is kept in the browser's localStorage between visits.
Then `validate.agreement(judge_results, [l.judgment() for l in read_labels(...)])` measures the judge.
"""
from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmflow.judge.base import JudgeError, Judgment

_DATA_RE = re.compile(r'<script type="application/json" id="pairs">(.*?)</script>', re.S)

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 1rem auto; padding: 0 1rem; }}
.pair {{ border: 1px solid #ccc; border-radius: 6px; padding: .8rem; margin: 1rem 0; }}
.text {{ background: #f6f6f6; padding: .4rem; white-space: pre-wrap; }}
.cols {{ display: flex; gap: 1rem; }} .cols > div {{ flex: 1; }}
textarea {{ width: 100%; min-height: 6rem; }} .done {{ border-color: #2a2; }}
img.shot {{ max-width: 256px; image-rendering: pixelated; display: block; margin: .4rem 0; }}
</style></head><body>
<h1>{title}</h1>
<p>For each pair: list the tangible objects each description mentions (one per line; "two cars" is two lines),
then pick, for every reference object, the candidate object that names the same thing, or "lost".
Unmatched candidate objects count as hallucinated. Labeller: <input id="labeller" size="10"></p>
<p><button id="download">Download labels.jsonl</button> <span id="status"></span></p>
<div id="pairs-view"></div>
<script type="application/json" id="pairs">{data}</script>
<script>
const PAIRS = JSON.parse(document.getElementById("pairs").textContent);
const KEY = "vlmflow-labels:" + document.title;
const saved = JSON.parse(localStorage.getItem(KEY) || "{{}}");
const view = document.getElementById("pairs-view");
function lines(t) {{ return t.split("\\n").map(s => s.trim()).filter(s => s.length); }}
function render(p, box) {{
  const st = saved[p.pair_id] || {{reference_objects: p.reference_objects, candidate_objects: p.candidate_objects, tp: p.tp}};
  box.innerHTML = "";
  const h = document.createElement("h3"); h.textContent = p.pair_id; box.appendChild(h);
  if (p.image) {{ const im = document.createElement("img"); im.src = p.image; im.alt = p.pair_id; im.className = "shot"; box.appendChild(im); }}
  if (p.question) {{ const q = document.createElement("div"); q.className = "text"; q.textContent = "QUESTION: " + p.question; box.appendChild(q); }}
  for (const side of ["reference", "candidate"]) {{
    const d = document.createElement("div"); d.className = "text"; d.textContent = ((p.names || {{}})[side] || side).toUpperCase() + ": " + p[side]; box.appendChild(d);
  }}
  const cols = document.createElement("div"); cols.className = "cols"; box.appendChild(cols);
  const areas = {{}};
  for (const side of ["reference_objects", "candidate_objects"]) {{
    const c = document.createElement("div"); c.innerHTML = "<b>" + side.replace("_", " ") + "</b>";
    const a = document.createElement("textarea"); a.value = st[side].join("\\n"); c.appendChild(a); cols.appendChild(c); areas[side] = a;
    a.addEventListener("change", () => {{ saved[p.pair_id] = {{...collect(), tp: []}}; store(); render(p, box); }});
  }}
  const m = document.createElement("div"); m.innerHTML = "<b>matches</b>"; cols.appendChild(m);
  const used = st.tp.slice();
  st.reference_objects.forEach((r, i) => {{
    const row = document.createElement("div"); row.textContent = r + " \u2192 ";
    const sel = document.createElement("select"); sel.dataset.ref = r;
    sel.add(new Option("lost", ""));
    st.candidate_objects.forEach((c, j) => sel.add(new Option(c, String(j))));
    const k = used.findIndex(t => t[0] === r);
    if (k >= 0) {{ const j = st.candidate_objects.indexOf(used[k][1]); sel.value = j >= 0 ? String(j) : ""; used.splice(k, 1); }}
    sel.addEventListener("change", () => {{ saved[p.pair_id] = collect(); store(); }});
    row.appendChild(sel); m.appendChild(row);
  }});
  function collect() {{
    const ref = lines(areas.reference_objects.value), cand = lines(areas.candidate_objects.value);
    const tp = []; const taken = new Set();
    m.querySelectorAll("select").forEach(s => {{ if (s.value !== "" && !taken.has(s.value)) {{ taken.add(s.value); tp.push([s.dataset.ref, cand[+s.value]]); }} }});
    box.classList.add("done");
    return {{reference_objects: ref, candidate_objects: cand, tp: tp}};
  }}
}}
function store() {{ localStorage.setItem(KEY, JSON.stringify(saved)); document.getElementById("status").textContent = Object.keys(saved).length + " of " + PAIRS.length + " pairs touched"; }}
PAIRS.forEach(p => {{ const box = document.createElement("div"); box.className = "pair"; view.appendChild(box); render(p, box); }});
document.getElementById("download").addEventListener("click", () => {{
  const who = document.getElementById("labeller").value;
  const out = PAIRS.map(p => {{ const st = saved[p.pair_id] || p;
    return JSON.stringify({{pair_id: p.pair_id, reference: p.reference, candidate: p.candidate,
      reference_objects: st.reference_objects, candidate_objects: st.candidate_objects, tp: st.tp, labeller: who, note: "",
      question: p.question || ""}}); }});
  const a = document.createElement("a"); a.href = URL.createObjectURL(new Blob([out.join("\\n") + "\\n"], {{type: "application/jsonl"}}));
  a.download = "labels.jsonl"; a.click();
}});
</script></body></html>
"""


def write_label_page(path: str | Path, pairs: Sequence[dict[str, Any]], prefill: Sequence[Judgment | None] | None = None,
                     title: str = "vlmflow: label judge pairs") -> Path:
    """Write the labelling page for `pairs` (dicts with pair_id, reference, candidate), pre-filled from `prefill`.
    A pair may also carry ``question`` (shown above the texts), ``image`` (a URL or ``data:`` URI, shown first) and
    ``names`` (``{"reference": "full-context answer", "candidate": "re-prompted answer"}``: the texts' headings)."""
    items = []
    for i, pair in enumerate(pairs):
        try:
            item = {"pair_id": str(pair.get("pair_id", i)), "reference": str(pair["reference"]),
                    "candidate": str(pair["candidate"])}
        except (KeyError, AttributeError) as exc:
            raise JudgeError(f"label pair {i} needs 'reference' and 'candidate' ({exc})") from None
        for extra in ("question", "image", "names"):  # optional: what the labeller sees besides the two texts
            if pair.get(extra):
                item[extra] = pair[extra]
        j = prefill[i] if prefill is not None else None
        ok = j is not None and j.ok
        item["reference_objects"] = list(j.reference_objects) if ok else []
        item["candidate_objects"] = list(j.candidate_objects) if ok else []
        item["tp"] = [list(p) for p in j.tp] if ok else []
        items.append(item)
    # "</" inside a script element would end it: escape it, JSON stays equivalent.
    data = json.dumps(items, ensure_ascii=False).replace("</", "<\\/")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_PAGE.format(title=html.escape(title), data=data), encoding="utf-8")
    return path


def page_pairs(path: str | Path) -> list[dict[str, Any]]:
    """The pairs embedded in a labelling page (for checks and for merging pages)."""
    found = _DATA_RE.search(Path(path).read_text(encoding="utf-8"))
    if not found:
        raise JudgeError(f"{path} is not a vlmflow labelling page (no embedded pairs)")
    return json.loads(found.group(1))
