"""The data layer: registry vs the real files, data-root resolution, the fetcher (against a local HTTP server:
good, corrupted, missing, resumed and zipped files), and the COCO / POPE / MME readers and the POPE builder."""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import threading
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from vlmflow.data import (
    build_pope,
    coco_sample,
    data_root,
    fetch,
    fetcher,
    mme_questions,
    pope_questions,
    read_mme,
    read_pope,
    registry,
    verify,
)
from vlmflow.data.mme import MmeFormatError
from vlmflow.errors import DataNotAvailableError, VlmflowError


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own user cache; no data env vars leak in."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("VLMFLOW_DATA_MIRROR", raising=False)
    yield


@pytest.fixture(scope="module")
def shared() -> Path:
    """The real data folder, reached through the fetcher (hashes verified)."""
    root = fetch("coco-sample", progress=False).parent
    for name in ("pope", "mme", "chair"):
        fetch(name, progress=False)
    return root


@pytest.fixture(scope="module")
def sample():
    return coco_sample(progress=False)


# ---------------------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------------------
def test_registry_covers_every_data_file_with_matching_hash(shared):
    regs = registry.datasets()
    registered = {e.path for files in regs.values() for e in files}
    on_disk = {p.relative_to(shared).as_posix() for n in regs for p in (shared / registry.folder_of(n)).rglob("*") if p.is_file()}
    assert registered == on_disk
    assert len(regs["coco-sample"]) == 102 and len(regs["pope"]) == 3 and len(regs["mme"]) == 4
    statuses = verify(root=shared)  # full re-hash, no stamps
    assert [s.describe() for s in statuses if not s.ok] == []


def test_image_md5_match_sources_md(shared):
    """Independent oracle: the md5 column of SOURCES.md for every image."""
    rows = re.findall(r"^\| `images/(\d{12}\.jpg)` \|.*\| `([0-9a-f]{32})` \|$", (shared / "SOURCES.md").read_text(),
                      re.M)
    assert len(rows) == 100
    for name, md5 in rows:
        assert hashlib.md5((shared / "coco_sample/images" / name).read_bytes()).hexdigest() == md5, name


def test_registry_urls_are_pinned_public_sources():
    sources = (fetcher.checkout_data_dir() or Path("/nonexistent")) / "SOURCES.md"
    text = sources.read_text() if sources.exists() else ""
    for files in registry.datasets().values():
        for e in files:
            if e.derived_from:
                assert e.urls == () and e.path in {"coco_sample/instances.json", "coco_sample/captions.json",
                                                    "chair/chair_rules.json", "chair/coco_categories.json"}
                continue
            assert e.urls, e.path
            gh = e.urls[0]
            m = re.fullmatch(r"https://raw\.githubusercontent\.com/([^/]+/[^/]+)/([0-9a-f]{40})/(.+)", gh)
            assert m, gh
            if text:
                assert m.group(2) in text, f"{gh}: commit not named in SOURCES.md"
            if e.path.startswith("coco_sample/images/"):
                assert e.urls[1] == f"http://images.cocodataset.org/val2017/{Path(e.path).name}"
            if e.dataset == "mme":
                assert gh.endswith("/tools/eval_tool.zip") and e.member == f"eval_tool/Your_Results/{Path(e.path).name}"


def test_unknown_dataset_names_the_valid_ones():
    with pytest.raises(registry.UnknownDatasetError, match="'cocoa'.*chair, coco-sample, mme, pope"):
        fetch("cocoa")


# ---------------------------------------------------------------------------------------------------------------
# data root resolution
# ---------------------------------------------------------------------------------------------------------------
def test_data_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMFLOW_DATA", str(tmp_path / "mine"))
    assert fetcher.locate() == (tmp_path / "mine", "$VLMFLOW_DATA")
    monkeypatch.delenv("VLMFLOW_DATA")
    beside = Path(fetcher.__file__).resolve().parents[3].parent / "shared" / "data"  # <repo>/../shared/data
    if beside.is_dir():
        assert fetcher.locate() == (beside, "checkout")
    monkeypatch.setattr(fetcher, "checkout_data_dir", lambda: None)
    assert fetcher.locate() == (tmp_path / "xdg" / "vlmflow" / "data", "cache")
    assert data_root() == tmp_path / "xdg" / "vlmflow" / "data"


def _copy_dataset(shared: Path, name: str, dest: Path) -> Path:
    shutil.copytree(shared / name, dest / name)
    return dest


def test_stamps_skip_rehash_until_file_changes(shared, tmp_path, monkeypatch):
    root = _copy_dataset(shared, "chair", tmp_path / "root")
    fetch("chair", root=root, progress=False)
    stamps = json.loads((tmp_path / "xdg/vlmflow/verified.json").read_text())
    assert {Path(p).name for p in stamps} == {"synonyms.txt", "chair_rules.json", "coco_categories.json"}
    assert not [p for p in root.rglob("*") if p.name not in {"synonyms.txt", "chair_rules.json",
                                                               "coco_categories.json", "chair"}]  # data folder untouched

    calls = []
    real = fetcher.sha256_file
    monkeypatch.setattr(fetcher, "sha256_file", lambda p: calls.append(Path(p).name) or real(p))
    fetch("chair", root=root, progress=False)
    assert calls == []  # all three known by (size, mtime)
    target = root / "chair/synonyms.txt"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fetch("chair", root=root, progress=False)
    assert calls == ["synonyms.txt"]


def test_corrupt_file_in_checkout_folder_is_reported_not_touched(shared, tmp_path, monkeypatch):
    root = _copy_dataset(shared, "chair", tmp_path / "shared_copy")
    bad = root / "chair/synonyms.txt"
    data = bytearray(bad.read_bytes())
    data[10] ^= 1
    bad.write_bytes(bytes(data))
    monkeypatch.delenv("VLMFLOW_DATA", raising=False)
    monkeypatch.setattr(fetcher, "checkout_data_dir", lambda: root)
    expected = registry.entries("chair")[2]
    assert expected.path == "chair/synonyms.txt"
    with pytest.raises(DataNotAvailableError) as err:
        fetch("chair", progress=False)
    msg = str(err.value)
    assert "synonyms.txt" in msg and expected.sha256 in msg and hashlib.sha256(data).hexdigest() in msg
    assert "VLMFLOW_DATA" in msg
    assert bad.read_bytes() == bytes(data)  # never writes the shared folder


# ---------------------------------------------------------------------------------------------------------------
# downloads against a local server
# ---------------------------------------------------------------------------------------------------------------
class _Server:
    """127.0.0.1 HTTP server over a folder, with Range support (optional) and a request log."""

    def __init__(self, folder: Path, ranges: bool = True):
        log = self.log = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                log.append((self.path, self.headers.get("Range")))
                path = folder / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404, "Not Found")
                    return
                body = path.read_bytes()
                rng = self.headers.get("Range")
                if rng and ranges:
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                    if start >= len(body):
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                    body = body[start:]
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(shared, tmp_path):
    """A mirror of chair/: synonyms.txt intact, chair_rules.json corrupted, coco_categories.json missing."""
    folder = _copy_dataset(shared, "chair", tmp_path / "served")
    rules = folder / "chair/chair_rules.json"
    rules.write_bytes(rules.read_bytes().replace(b"motor bike", b"motor bake"))
    (folder / "chair/coco_categories.json").unlink()
    return folder


def _registry_for(tmp_path: Path, entries: list[registry.FileEntry]) -> Path:
    out = tmp_path / "registry.json"
    spec = defaultdict(list)
    for e in entries:
        spec[e.dataset].append({"path": e.path, "sha256": e.sha256, "size": e.size, "urls": list(e.urls),
                                "member": e.member, "derived_from": e.derived_from})
    out.write_text(json.dumps({"datasets": {k: {"files": v} for k, v in spec.items()}}))
    return out


def _entry(path: str) -> registry.FileEntry:
    return next(e for files in registry.datasets().values() for e in files if e.path == path)


def test_mirror_download_good_corrupt_and_missing(shared, served, tmp_path):
    dest = tmp_path / "dest"
    with _Server(served) as srv:
        good = _registry_for(tmp_path, [_entry("chair/synonyms.txt")])
        folder = fetch("chair", root=dest, mirror=srv.url, progress=False, registry_file=good)
        assert (folder / "synonyms.txt").read_bytes() == (shared / "chair/synonyms.txt").read_bytes()

        corrupt = _registry_for(tmp_path, [_entry("chair/chair_rules.json")])
        with pytest.raises(DataNotAvailableError) as err:
            fetch("chair", root=dest, mirror=srv.url, progress=False, registry_file=corrupt)
        want = _entry("chair/chair_rules.json").sha256
        got = hashlib.sha256((served / "chair/chair_rules.json").read_bytes()).hexdigest()
        assert "chair/chair_rules.json" in str(err.value) and want in str(err.value) and got in str(err.value)
        assert not (dest / "chair/chair_rules.json").exists()
        assert not list(dest.rglob("*.part"))

        missing = _registry_for(tmp_path, [_entry("chair/coco_categories.json")])
        with pytest.raises(DataNotAvailableError) as err:
            fetch("chair", root=dest, mirror=srv.url, progress=False, registry_file=missing)
        msg = str(err.value)
        assert "chair/coco_categories.json" in msg and "HTTP 404" in msg and srv.url in msg and "VLMFLOW_DATA" in msg
        assert not (dest / "chair/coco_categories.json").exists()


@pytest.mark.parametrize("server_ranges", [True, False])
def test_download_resumes_from_part_file(shared, served, tmp_path, server_ranges):
    entry = _entry("chair/synonyms.txt")
    reg = _registry_for(tmp_path, [entry])
    dest = tmp_path / "dest"
    part = dest / "chair/synonyms.txt.part"
    part.parent.mkdir(parents=True)
    original = (shared / entry.path).read_bytes()
    part.write_bytes(original[:1000])
    with _Server(served, ranges=server_ranges) as srv:
        fetch("chair", root=dest, mirror=srv.url, progress=False, registry_file=reg)
    assert srv.log == [("/chair/synonyms.txt", "bytes=1000-")]
    assert (dest / entry.path).read_bytes() == original  # appended when resumed, rewritten when the server said 200
    assert not part.exists()


def test_registry_urls_and_zip_member(shared, tmp_path):
    """No mirror: the registry's own URLs (first failing, second working) and an MME file from inside a zip."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(shared / "chair/synonyms.txt", site / "synonyms.txt")
    with zipfile.ZipFile(site / "eval_tool.zip", "w") as zf:
        zf.write(shared / "mme/count.txt", "eval_tool/Your_Results/count.txt")
    syn, count = _entry("chair/synonyms.txt"), _entry("mme/count.txt")
    with _Server(site) as srv:
        syn = registry.FileEntry(syn.path, syn.sha256, syn.size, (f"{srv.url}/gone.txt", f"{srv.url}/synonyms.txt"))
        count = registry.FileEntry(count.path, count.sha256, count.size, (f"{srv.url}/eval_tool.zip",),
                                   member="eval_tool/Your_Results/count.txt")
        reg = _registry_for(tmp_path, [syn, count])
        dest = tmp_path / "dest"
        fetch("chair", root=dest, progress=False, registry_file=reg)
        fetch("mme", root=dest, progress=False, registry_file=reg)
    assert (dest / "chair/synonyms.txt").read_bytes() == (shared / "chair/synonyms.txt").read_bytes()
    assert (dest / "mme/count.txt").read_bytes() == (shared / "mme/count.txt").read_bytes()
    assert [p for p, _ in srv.log] == ["/gone.txt", "/synonyms.txt", "/eval_tool.zip"]


def test_no_network_and_derived_files_say_how_to_provide(tmp_path):
    e = _entry("chair/synonyms.txt")
    offline = registry.FileEntry(e.path, e.sha256, e.size, ("http://127.0.0.1:9/synonyms.txt",))
    reg = _registry_for(tmp_path, [offline, _entry("chair/chair_rules.json")])
    with pytest.raises(DataNotAvailableError, match=r"cannot download chair/synonyms\.txt.*127\.0\.0\.1:9.*VLMFLOW_DATA"):
        fetch("chair", root=tmp_path / "d1", progress=False, registry_file=reg)
    reg = _registry_for(tmp_path, [_entry("chair/chair_rules.json")])
    with pytest.raises(DataNotAvailableError, match=r"chair/chair_rules\.json has no public download.*VLMFLOW_DATA"):
        fetch("chair", root=tmp_path / "d2", progress=False, registry_file=reg)


# ---------------------------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------------------------
def test_coco_sample_contents(sample, shared):
    assert len(sample.image_ids) == 100
    assert len(sample.coco.anns) == 839 and len(sample.category_names) == 80
    assert sum(len(c) for c in sample.captions.values()) == 500 and all(len(c) == 5 for c in sample.captions.values())
    assert sample.annotations(58636) == [] and sample.annotations(226111) == []
    assert len(sample.annotations(139)) == 20  # cross-checked in SOURCES.md against mmdetection's fixture
    assert sum(a["iscrowd"] for a in sample.coco.anns.values()) == 10
    for image_id in sample.image_ids[:5]:
        info = sample.image_info(image_id)
        assert sample.image_path(image_id) == shared / "coco_sample/images" / f"{image_id:012d}.jpg"
        assert sample.image(image_id).size == (info["width"], info["height"])
    ann = sample.annotations(139)[0]
    m = sample.mask(ann)
    ys, xs = np.nonzero(m)
    x, y, w, h = ann["bbox"]
    assert m.shape == (426, 640) and m.sum() > 0
    assert abs(xs.min() - x) < 10 and abs(ys.min() - y) < 10 and abs(xs.max() + 1 - (x + w)) < 10
    assert sample.object_mask(139, "giraffe").sum() == 0
    assert "person" in sample.objects(139)


def test_read_pope_official_files(tmp_path):
    recs = pope_questions("random", progress=False)
    assert len(recs) == 3000 and Counter(r.label for r in recs) == {"yes": 1500, "no": 1500}
    assert len({r.image_id for r in recs}) == 500
    assert recs[0].image_id == 310196 and recs[0].object == "snowboard" and recs[0].label == "yes"
    assert all(r.object for r in recs) and {r.sampling for r in recs} == {"random"}
    an = [r for r in recs if r.object == "apple"]
    assert an and all(r.question == "Is there an apple in the image?" for r in an)
    # the same records as one JSON array read the same
    path = fetch("pope", progress=False) / "coco_pope_random.json"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    arr = tmp_path / "x_pope_random.json"
    arr.write_text(json.dumps(rows))
    assert read_pope(arr) == recs


def test_read_mme(tmp_path):
    recs = mme_questions(progress=False)
    assert len(recs) == 240
    by_image = defaultdict(list)
    for r in recs:
        by_image[r.image_key].append(r.label)
    assert len(by_image) == 120 and all(sorted(v) == ["no", "yes"] for v in by_image.values())
    giraffe = [r for r in recs if r.subtask == "count" and r.image_id == 261712 and "two giraffes" in r.question]
    assert [r.label for r in giraffe] == ["yes"]  # agrees with the 2 giraffe annotations (SOURCES.md)
    bad = tmp_path / "color.txt"
    bad.write_text("000000000001.jpg\tIs it red?\tYes\n000000000001.jpg\tIs it blue?\n")
    with pytest.raises(MmeFormatError, match=r"color\.txt:2"):
        read_mme(bad)


# ---------------------------------------------------------------------------------------------------------------
# POPE builder
# ---------------------------------------------------------------------------------------------------------------
def _oracle_stats(sample):
    present = {i: sample.objects(i) for i in sample.image_ids}
    freq = Counter(c for objs in present.values() for c in objs)
    co = Counter((a, b) for objs in present.values() for a in objs for b in objs if a != b)
    return present, freq, co


@pytest.mark.parametrize("sampling", ["random", "popular", "adversarial"])
def test_build_pope_balanced_and_never_asks_present_objects_as_no(sample, sampling):
    qs = build_pope(sample, n_per_image=6, sampling=sampling, seed=1)
    present, _, _ = _oracle_stats(sample)
    by_image = defaultdict(list)
    for q in qs:
        by_image[q.image_id].append(q)
    eligible = {i for i, objs in present.items() if len(objs) >= 3}
    assert set(by_image) == eligible
    for image_id, rows in by_image.items():
        assert [r.label for r in rows] == ["yes", "no"] * 3
        objs = [r.object for r in rows]
        assert len(set(objs)) == 6
        for r in rows:
            assert (r.object in present[image_id]) == (r.label == "yes"), (image_id, r)
    assert [q.question_id for q in qs] == list(range(1, len(qs) + 1))
    assert qs == build_pope(sample, n_per_image=6, sampling=sampling, seed=1)


def test_build_pope_popular_takes_most_frequent_absent(sample):
    present, freq, _ = _oracle_stats(sample)
    for q_image, rows in _group(build_pope(sample, 6, "popular", seed=0)).items():
        negs = {r.object for r in rows if r.label == "no"}
        absent_rest = [c for c in freq if c not in present[q_image] and c not in negs]
        assert min(freq[c] for c in negs) >= max(freq[c] for c in absent_rest), q_image


def test_build_pope_adversarial_takes_most_cooccurring(sample):
    present, _, co = _oracle_stats(sample)
    universe = {c for objs in present.values() for c in objs}
    for image_id, rows in _group(build_pope(sample, 6, "adversarial", seed=0)).items():
        asked: set[str] = set()
        for pos, neg in zip(rows[::2], rows[1::2]):
            asked.add(pos.object)
            free = [c for c in universe if c not in present[image_id] and c not in asked]
            best = max(co[(pos.object, c)] for c in free)
            assert co[(pos.object, neg.object)] == best, (image_id, pos.object, neg.object)
            asked.add(neg.object)


def test_build_pope_random_differs_by_seed_and_spreads(sample):
    a = build_pope(sample, 6, "random", seed=0)
    b = build_pope(sample, 6, "random", seed=1)
    assert [q.object for q in a] != [q.object for q in b]
    rand_negs = Counter(q.object for q in a if q.label == "no")
    pop_negs = Counter(q.object for q in build_pope(sample, 6, "popular", seed=0) if q.label == "no")
    assert len(rand_negs) > 40 > len(pop_negs)


def test_build_pope_arguments(sample):
    with pytest.raises(VlmflowError, match="even"):
        build_pope(sample, 5)
    with pytest.raises(VlmflowError, match="'rare'"):
        build_pope(sample, 6, "rare")
    two = build_pope(sample, 2, "popular", image_ids=[58636, 139])  # 58636 has no objects: skipped
    assert [q.image_id for q in two] == [139, 139]


def _group(qs):
    out = defaultdict(list)
    for q in qs:
        out[q.image_id].append(q)
    return out


def test_cli_data_verify_and_where(capsys, shared):
    from vlmflow.cli import main

    assert main(["data", "verify", "chair", "mme"]) == 0
    assert "7/7 files ok" in capsys.readouterr().out
    assert main(["data", "where"]) == 0
    out = capsys.readouterr().out
    assert f"data root\t{shared}" in out and "coco-sample\t102/102 files present" in out
    assert main(["data", "fetch", "nosuch"]) == 2  # a VlmflowError becomes one line and exit code 2
    assert "unknown dataset 'nosuch'" in capsys.readouterr().err
