"""Toy clips: every event is what the frames show (recovered independently from the tracks), pixel-exact frames,
text round trip and fact F1 with known answers, COCO that pycocotools reads, and the CLI's clear errors."""
import json

import numpy as np
import pytest

from vlmflow.toy.clips import (
    EVENT_KINDS,
    FACT_FAMILIES,
    ClipConfig,
    clip_facts,
    clip_questions,
    describe_clip,
    make_clip,
    make_clips,
    parse_clip,
    recall_by_family,
    score_clip,
    write_clips,
)
from vlmflow.toy.scenes import BACKGROUND, COLORS, SceneConfig, SceneConfigError, make_scene

CLIPS = make_clips(0, 60, "test")


def _recovered_event(before, after):
    """The event between two frames, read off the track ids and objects alone (the oracle for ``Clip.events``)."""
    a = {t.track: t for t in before}
    b = {t.track: t for t in after}
    if set(b) - set(a):
        (new,) = set(b) - set(a)
        return "appear", new
    if set(a) - set(b):
        (gone,) = set(a) - set(b)
        return "disappear", gone
    changed = [k for k in a if (a[k].object, a[k].placed.cell) != (b[k].object, b[k].placed.cell)]
    assert len(changed) == 1, "exactly one track changes per frame"
    k = changed[0]
    if a[k].object == b[k].object:
        return "move", k
    assert a[k].placed.cell == b[k].placed.cell and np.array_equal(a[k].placed.mask, b[k].placed.mask)
    assert (a[k].object.shape, a[k].object.size) == (b[k].object.shape, b[k].object.size)
    return "recolor", k


def test_events_are_what_the_frames_show():
    seen = set()
    for clip in CLIPS:
        assert 2 <= len(clip.frames) <= 4 and len(clip.events) == len(clip.frames) - 1 == len(clip.images) - 1
        for k, event in enumerate(clip.events, start=1):
            assert event.frame == k
            assert _recovered_event(clip.frames[k - 1], clip.frames[k]) == (event.kind, event.track)
            before = {t.track: t for t in clip.frames[k - 1]}
            after = {t.track: t for t in clip.frames[k]}
            if event.kind == "appear":
                assert event.object == after[event.track].object
            else:
                assert event.object == before[event.track].object
            if event.kind == "recolor":
                assert after[event.track].object.color == event.new_color != event.object.color
            if event.kind == "move":
                assert after[event.track].placed.position == event.position
            seen.add(event.kind)
        for frame in clip.frames:
            cells = [t.placed.cell for t in frame]
            assert cells == sorted(set(cells)) and 1 <= len(frame) <= 4  # reading order, one object per cell
    assert seen == set(EVENT_KINDS)


def test_frames_are_pixel_exact():
    for clip in CLIPS[:10]:
        for frame, image in zip(clip.frames, clip.images, strict=True):
            px = np.asarray(image)
            painted = np.zeros(px.shape[:2], dtype=bool)
            for t in frame:
                assert (px[t.placed.mask] == COLORS[t.object.color]).all()
                assert not (painted & t.placed.mask).any()
                painted |= t.placed.mask
            assert (px[~painted] == BACKGROUND).all()


def test_deterministic_and_disjoint_from_scene_streams():
    a, b = make_clip(3, "test", 7), make_clip(3, "test", 7)
    assert describe_clip(a) == describe_clip(b)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.images, b.images, strict=True))
    same_first_frame = sum(
        [t.object for t in make_clip(3, "test", i).frames[0]] == make_scene(3, "test", i).toy_objects
        for i in range(20))
    assert same_first_frame <= 2
    assert len({describe_clip(make_clip(3, "test", i)) for i in range(20)}) == 20


def test_text_round_trip_and_fact_f1_known_answers():
    for clip in CLIPS:
        truth = clip_facts(clip)
        assert parse_clip(describe_clip(clip)) == truth
        assert score_clip(truth, truth).f1 == 1.0
    clip = next(c for c in CLIPS if len(c.events) == 3 and len(c.frames[0]) == 2)  # 5 facts
    truth = clip_facts(clip)
    text = describe_clip(clip)
    dropped = text.rsplit(" . then ", 1)[0]  # the last event missing: precision 1, recall 4/5
    s = score_clip(truth, parse_clip(dropped))
    assert (s.precision, s.recall) == (1.0, 4 / 5) and s.f1 == pytest.approx(2 * 0.8 / 1.8)
    objects, events = truth
    wrong_kind = [(("appear" if k != "appear" else "disappear"), o, None) for k, o, _ in events[:1]] + events[1:]
    s = score_clip(truth, (objects, wrong_kind))
    assert (s.tp, s.fp, s.fn) == (4, 1, 1)
    assert score_clip(truth, ([], [])).f1 == 0.0


def test_recall_by_family_known_answers():
    """Recall per fact family, pooled over clips, on hand-made descriptions: one clip told perfectly, one with its
    events dropped, one with an event's detail wrong; families no clip has are None."""
    pairs, expected_hits, expected_totals = [], dict.fromkeys(FACT_FAMILIES, 0), dict.fromkeys(FACT_FAMILIES, 0)
    for i, clip in enumerate(CLIPS[:3]):
        objects, events = clip_facts(clip)
        told = {0: events, 1: [], 2: [(k, o, d and "nowhere") for k, o, d in events]}[i]  # i=2: every detail wrong
        pairs.append(((objects, events), (objects, told)))
        for family in FACT_FAMILIES:
            n = len(objects) if family == "object" else sum(e[0] == family for e in events)
            expected_totals[family] += n
            expected_hits[family] += n if family == "object" or i == 0 else 0
    # clip 2: an event kind without a detail (appear, disappear) is still told right
    for kind, _, detail in clip_facts(CLIPS[2])[1]:
        expected_hits[kind] += detail is None
    expected = {f: expected_hits[f] / expected_totals[f] if expected_totals[f] else None for f in FACT_FAMILIES}
    assert recall_by_family(pairs) == pytest.approx(expected, abs=5e-5)  # rounded to 4 places
    assert recall_by_family([(clip_facts(c), clip_facts(c)) for c in CLIPS]) == dict.fromkeys(FACT_FAMILIES, 1.0)
    assert recall_by_family([]) == dict.fromkeys(FACT_FAMILIES)


def test_parse_tolerates_paraphrase_and_keeps_unreadable_targets_unmatched():
    objects, facts = parse_clip("a big red circle. Then the big red circle turns into a blue one, "
                                "then the big blue circle moves to the top left. then something happens")
    assert [(o.size, o.color, o.shape) for o in objects] == [("large", "red", "circle")]
    assert [(k, o.color, d) for k, o, d in facts] == [("recolor", "red", "blue"), ("move", "blue", "top left")]
    _, facts = parse_clip("small red ring . then the small red ring turns pink")
    assert facts[0][2] is None


def test_questions_have_exact_answers():
    for clip in CLIPS:
        qa = {q["kind"]: q["answer"] for q in clip_questions(clip)}
        assert qa["describe_video"] == describe_clip(clip)
        assert qa["count_at_end"] == ["zero", "one", "two", "three", "four"][len(clip.frames[-1])]
        for kind in EVENT_KINDS:
            happened = [e for e in clip.events if e.kind == kind]
            assert (qa[kind] == "nothing") == (not happened)


def test_coco_output_reads_back_with_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    path = write_clips(tmp_path / "clips", seed=0, n=6, split="test", progress=False)
    coco = COCO(str(path))
    data = json.loads(path.read_text())
    clips = make_clips(0, 6, "test")
    assert [v["n_frames"] for v in data["videos"]] == [len(c.frames) for c in clips]
    for video, clip in zip(data["videos"], clips, strict=True):
        frames = [i for i in data["images"] if i["video_id"] == video["id"]]
        assert [f["frame_index"] for f in frames] == list(range(len(clip.frames)))
        assert [f["file_name"] for f in frames] == video["file_names"]
        for f, tracks in zip(frames, clip.frames, strict=True):
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[f["id"]]))
            assert [a["track_id"] for a in anns] == [t.track for t in tracks]
            for a, t in zip(anns, tracks, strict=True):
                assert np.array_equal(coco.annToMask(a).astype(bool), t.placed.mask)
                assert (a["color"], a["frame_index"]) == (t.object.color, f["frame_index"])
            assert (tmp_path / "clips" / "frames" / f["file_name"]).is_file()
        assert [e["kind"] for e in video["events"]] == [e.kind for e in clip.events]
    assert len({q["id"] for q in data["questions"]}) == len(data["questions"]) == 6 * 6


def test_bad_config_names_the_setting():
    with pytest.raises(SceneConfigError, match="min_frames"):
        ClipConfig(min_frames=1)
    with pytest.raises(SceneConfigError, match="min_objects"):
        ClipConfig(scene=SceneConfig(min_objects=0))
