"""Every registered notebook runs under papermill with its small test parameters (the pipeline's test mode), leaves
no secret in its executed copy, stores its results, and reuses them on a rerun. Per-figure checks compare what the
notebook stored against an independent reading of the same inputs. A figure in the book is checked on the run of the
test-mode book build (``built_book``, the same parameters), so the suite executes it once, not twice, and reruns it
once to see the stored results reused; a figure that waits for its toy model runs here, on a tiny random toy of its
architecture."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from vlmflow import book

from .conftest import REPO

SPECS = book.load_registry(REPO)


def _same_as_claim_checks(name: str, verdict: dict, check: str, *args) -> None:
    """The finding page's published verdict (its numbers and outcome) equals what ``vlmflow.claim_checks`` computes
    from the page's own stored rows with the page's bootstrap settings: one computation of each claim's intervals."""
    import numpy as np

    from vlmflow import claim_checks

    def flat(value):  # nested lists of numbers (windows: [first, last, [estimate, low, high]]) -> floats
        return [x for item in value for x in (flat(item) if isinstance(item, (list, tuple)) else [float(item)])]

    params = SPECS[name].parameters(test=True)
    _, mine = getattr(claim_checks, check)(*args, n_resamples=params["n_resamples"], seed=params["seed"])
    assert mine.outcome == verdict["outcome"] and mine.measured == verdict["measured"]
    for key, value in verdict["numbers"].items():
        if isinstance(value, list):
            assert np.allclose(flat(mine.numbers[key]), flat(value)), (name, key)
        else:
            assert mine.numbers[key] == value, (name, key)


def check_token_roles(results: Path, model: str) -> None:
    """The stored layout must agree with the processor's own ids: image positions are exactly those holding the
    model's image token id (read from the model's config, not from the adapter), the query is the user's words."""
    import pandas as pd

    from vlmflow.model import toy_model_path

    layout = pd.read_parquet(results / "layout.parquet")
    folder = toy_model_path() if model == "toy" else Path(model)
    config = json.loads((folder / "config.json").read_text())
    image_token_id = config.get("image_token_index", config.get("image_token_id"))
    for _, prompt in layout.groupby("prompt"):
        assert ((prompt.role == "image") == (prompt.token_id == image_token_id)).all()
        assert prompt.role.iloc[-1] != "image" and (prompt.role == "image").sum() > 0
        query = prompt[prompt.role == "query"].token.str.replace("▁", "").str.strip()
        assert " ".join(t for t in query if t) == "describe the image"
        text = prompt[prompt.paper_group == "text"]
        assert set(text.role) <= {"bos", "system", "user", "query", "assistant"}
    assert (results / "token_roles.png").stat().st_size > 10_000


def check_fig1_attention_by_role(results: Path, model: str) -> None:
    """Every stored attention row is a distribution over roles and so is its uniform baseline; the figure's table
    (the paper's text group per layer) equals the sum of the fine text roles read from the store itself."""
    import numpy as np
    import pandas as pd

    from vlmflow.roles import GROUPS, ROLES
    from vlmflow.store import load_results

    (folder,) = [p for p in results.iterdir() if p.name.startswith("sweep-")]
    att = load_results(folder, "attention")
    assert att.image.nunique() == SPECS["fig1_attention_by_role"].parameters(test=True)["n_images"]
    assert np.allclose(att[[f"mass_{r}" for r in ROLES]].sum(axis=1), 1.0, atol=1e-4)
    assert np.allclose(att[[f"share_{r}" for r in ROLES]].sum(axis=1), 1.0, atol=1e-6)
    text = att[[f"mass_{r}" for r in GROUPS["text"]]].sum(axis=1).groupby(att.layer).mean()
    table = pd.read_csv(results / "attention_by_role.csv")
    drawn = table[(table.view == "paper") & (table.role == "text")].set_index("layer").mass
    assert np.allclose(drawn.sort_index().to_numpy(), text.sort_index().to_numpy(), atol=1e-9)
    assert (results / "fig1_attention_by_role.png").stat().st_size > 10_000
    # the verdict was decided on the per-layer intervals the page's table shows, and its outcome follows from them
    verdict = json.loads((results / "verdict-fig1.json").read_text())
    rows = table[(table.view == "paper") & (table.role == "text")].sort_values("layer")
    assert np.allclose(verdict["numbers"]["mass"], rows[["mass", "mass_low", "mass_high"]].to_numpy())
    below = int((rows.ratio_high < 1).sum())
    assert f"clearly below its uniform share in {below} of {len(rows)}" in verdict["measured"]
    _same_as_claim_checks("fig1_attention_by_role", verdict, "fig1_check", att)


def check_toy_world(results: Path, model: str) -> None:
    """The stored truths are the scenes' own ground truth (re-rendered here), and the full knockout's answers cannot
    depend on the image: one answer per describe question across scenes."""
    import pandas as pd

    from vlmflow.toy.grammar import describe
    from vlmflow.toy.scenes import make_scene

    answers = pd.read_parquet(results / "answers.parquet")
    assert sorted(answers.scene.unique()) == list(range(SPECS["toy_world"].parameters(test=True)["n_images"]))
    for r in answers[answers.kind == "describe"].itertuples():
        assert r.truth == describe(make_scene(0, "test", int(r.scene)).toy_objects)
    ko = answers[(answers.condition == "full knockout") & (answers.kind == "describe")]
    assert ko.answer.nunique() == 1
    assert (results / "toy_world_metrics.png").stat().st_size > 10_000


def check_fig3_judge(results: Path, model: str) -> None:
    """Pairs are (the scene's ground-truth caption, a description), and every validation figure lies in [0, 1]."""
    import pandas as pd

    from vlmflow.toy.grammar import describe
    from vlmflow.toy.scenes import make_scene

    pairs = pd.read_parquet(results / "descriptions.parquet")
    assert len(pairs) == 2 * SPECS["fig3_judge"].parameters(test=True)["n_images"]
    assert set(pairs.condition) == {"plain", "full knockout"}
    for r in pairs.itertuples():
        assert r.truth == describe(make_scene(0, "test", int(r.scene)).toy_objects)
    validation = pd.read_csv(results / "judge_validation.csv")
    assert set(validation.judge) == {"lexical"}
    agree = validation[validation.measure != "|F1 difference|"]
    assert ((agree.value_low >= 0) & (agree.value_high <= 1) & (agree.value_low <= agree.value)).all()



def _check_truth_scores(results: Path):
    """The stored F1 against ground truth equals the toy grammar's own scorer on a re-rendered scene."""
    import pandas as pd

    from vlmflow.toy import grammar
    from vlmflow.toy.scenes import make_scene

    (scores_file,) = results.glob("scores-*.parquet")
    scores = pd.read_parquet(scores_file)
    for image, text, f1 in zip(scores.image, scores.text, scores.f1_truth):
        truth = make_scene(0, "test", int(image.rsplit("-", 1)[1])).description
        assert f1 == pytest.approx(grammar.score(grammar.parse(truth), grammar.parse(text)).f1), (image, text)
    return scores


def check_fig2_knockout_from_layer(results: Path, model: str) -> None:
    """F1 vs truth re-scored independently; KO image->generated never touches the position that predicts the first
    token, so its free first token is always the baseline's; the forced twin of every knockout is there."""
    scores = _check_truth_scores(results)
    assert scores[scores.ko_type == "img->gen"].first_token_matches_baseline.all()
    ko = scores[scores.ko_type != "none"]
    assert ko.forced.sum() == (~ko.forced.astype(bool)).sum() > 0
    for name in ("fig2_from_layer", "fig2_forced_vs_free"):
        assert (results / f"{name}.png").stat().st_size > 10_000
    # the verdict's F1 for KO image->generated and image->text in all layers are the stored scores' means
    verdict = json.loads((results / "verdict-finding1.json").read_text())
    free = scores[~scores.forced.astype(bool) & (scores.layer == -1)]
    for key, ko_type in (("gen", "img->gen"), ("txt", "img->txt"), ("floor", "img->txt+gen")):
        assert verdict["numbers"][key][0] == pytest.approx(free[free.ko_type == ko_type].f1_baseline.mean())
    # vlmflow.claim_checks (the recipe study's and the across-architectures chapter's computation) decides the same
    _same_as_claim_checks("fig2_knockout_from_layer", verdict, "finding1_check", scores)


def check_middle_layers(results: Path, model: str) -> None:
    """Windows are [start, end] of their width; every top-K rule and K of the preset has a CI that holds its
    estimate; F1 vs truth re-scored independently."""
    import pandas as pd

    from vlmflow.presets import TOPK_PERCENTS, TOPK_SELECTIONS

    _check_truth_scores(results)
    windows = pd.read_csv(results / "windows.csv")
    assert (windows.window_end - windows.window_start + 1 == windows.width).all()
    topk = pd.read_csv(results / "topk.csv")
    assert set(topk["select"]) == set(TOPK_SELECTIONS) and set(topk.k_percent) == set(map(float, TOPK_PERCENTS))
    for t, v in ((windows, "f1_baseline"), (topk, "f1_baseline")):
        assert ((0 <= t[f"{v}_low"]) & (t[f"{v}_low"] <= t[v]) & (t[v] <= t[f"{v}_high"]) & (t[f"{v}_high"] <= 1)).all()
    for name in ("middle_layers_windows", "middle_layers_topk"):
        assert (results / f"{name}.png").stat().st_size > 10_000
    # the verdict's windows are the stored windows of the width closest to a quarter of the layers
    verdict = json.loads((results / "verdict-finding2.json").read_text())
    n_layers = verdict["numbers"]["n_layers"]
    width = min(windows.width.unique(), key=lambda w: abs(w - max(1, round(n_layers / 4))))
    quarter = windows[windows.width == width].sort_values("window_start")
    assert [w[:2] for w in verdict["numbers"]["windows"]] == quarter[["window_start", "window_end"]].values.tolist()
    assert [w[2][0] for w in verdict["numbers"]["windows"]] == pytest.approx(quarter.f1_baseline.tolist())
    scores = pd.read_parquet(next(results.glob("scores-*.parquet")))
    floor = verdict["numbers"]["floor"]
    _same_as_claim_checks("middle_layers", verdict, "finding2_check", scores, n_layers, floor)


def check_query_kinds(results: Path, model: str) -> None:
    """A one-word answer (exists, count, colour) is predicted at the last prompt position, a text position: KO
    image→generated cannot change it (kept exactly 1; a position answer's second word can change); the route
    table's routes follow from the stored intervals, and the verdict was decided on the trained phrasing's
    numbers."""
    import pandas as pd

    from vlmflow.query_kinds import pathway
    from vlmflow.stats import CI

    fl = pd.read_csv(results / "from_layer.csv")
    one_word = fl[fl.kind.isin(["exists", "count", "color"]) & (fl.ko_type == "img->gen") & ~fl.forced]
    assert len(one_word) and (one_word.kept == 1.0).all()
    routes = pd.read_csv(results / "routes.csv")
    verdict = json.loads((results / "verdict-oq_queries.json").read_text())
    for r in routes.itertuples():
        t = fl[(fl.kind == r.kind) & (fl.phrasing == r.phrasing) & (fl.layer == -1) & ~fl.forced].set_index("ko_type")
        cis = [CI(*t.loc[k, ["kept", "kept_low", "kept_high"]]) for k in ("img->gen", "img->txt", "img->txt+gen")]
        assert r.route == pathway(*cis)
        if r.phrasing == "trained":
            assert verdict["numbers"][r.kind]["gen"] == pytest.approx(list(cis[0]))


def check_visual_complexity(results: Path, model: str) -> None:
    """Each stored scene of the objects axis holds as many objects as its level says (read from its truth by the
    toy grammar), the attention entropy is a normalised entropy, and levels above 4 objects or with clutter are
    marked out of distribution."""
    import pandas as pd

    from vlmflow.toy.grammar import parse

    scenes = pd.read_parquet(results / "scenes.parquet")
    obj = scenes[scenes.axis == "objects"]
    assert len(obj) and all(len(parse(t)) == int(lv) for t, lv in zip(obj.truth, obj.level))
    assert (obj.in_distribution == (obj.level.astype(int) <= 4)).all()
    clutter = scenes[scenes.axis == "clutter"]
    assert (clutter.in_distribution == (clutter.level.astype(float) == 0)).all()  # trained on plain backgrounds
    assert ((scenes.entropy > 0) & (scenes.entropy <= 1 + 1e-9)).all()
    assert (results / "visual_complexity.png").stat().st_size > 10_000


def check_human_eval(results: Path, model: str) -> None:
    """The labelling page embeds exactly the stored pairs (each with its question and image), and no label of a
    person was made up: with no labels file the verdict counts zero."""
    import pandas as pd

    from vlmflow.judge.label import page_pairs

    pairs = pd.read_parquet(results / "pairs.parquet")
    page = page_pairs(results / "label_reprompt.html")
    assert [p["candidate"] for p in page] == pairs.candidate.tolist()
    assert all(p["question"] == "describe the image" and p["image"].startswith("data:image/png") for p in page)
    verdict = json.loads((results / "verdict-nc_judge.json").read_text())
    assert "real human labels: 0" in verdict["notes"]


def check_generation_steps(results: Path, model: str) -> None:
    """Per step the three groups' attention sums to one (a batch of one has no padding), and the knockout effect
    with nothing forced at position 0 under KO image→generated is exactly 1: the first token is predicted at the
    last prompt position, which that knockout does not touch."""
    import numpy as np
    import pandas as pd

    steps = pd.read_parquet(results / "steps.parquet")
    assert np.allclose(steps[["mass_image", "mass_text", "mass_generated"]].sum(axis=1), 1.0, atol=1e-4)
    pe = pd.read_csv(results / "position_effect.csv")
    assert pe[(pe.ko_type == "img->gen") & (pe.k == 0)].same.iloc[0] == 1.0


def check_planted_models(results: Path, model: str) -> None:
    """Top-K under a plant: the stored all-layer top-K description equals one generated outside the sweep engine
    (``VLM.generate`` under the plant, ranked by its own recorded baseline, ``ImageSelection.hide``) with the knockout
    restricted to what the plant leaves readable. Table 1: the single-turn query context is the template text before
    the image, the same for every image, so a question asked of several images gets one answer on every model."""
    import pandas as pd

    import vlmflow as vf
    from vlmflow.knockout import Knockout
    from vlmflow.model import toy_model_folder
    from vlmflow.plant import read_plant
    from vlmflow.record import Record
    from vlmflow.selection import ImageSelection
    from vlmflow.store import load_results
    from vlmflow.toy.scenes import make_scene

    topk = pd.read_csv(results / "planted_topk.csv")
    assert ((topk.F1_low <= topk.F1) & (topk.F1 <= topk.F1_high)).all()
    question, k = "describe the image", float(topk["K %"].min())
    image = make_scene(0, "test", 0).image
    for name in SPECS["planted_models"].defaults["planted"]:
        tag = name.replace(":", "_")
        vlm, plant = vf.load(name), read_plant(toy_model_folder(name))
        base = vlm.generate(image, question, record=Record(rows=("last_prompt", "generated")), max_new_tokens=64)
        pos = vlm.prepare(image, question).roles.positions("image", 0).tolist()
        sel = ImageSelection(k, "attention")
        ranking = sel.ranking(vlm.num_layers, len(pos), attention=base.record.image_map.float().mean(0))
        readable = plant.unblocked(Knockout("image", ("text", "generated")), vlm.num_layers)
        kos = [h for ko in readable for h in sel.hide(ko, ranking, pos, vlm.num_layers)]
        rows = load_results(next((results / tag / "topk").glob("sweep-*")))
        stored = rows[(rows.image == "toy-test-00000") & (rows.family == "topk") & (rows.k_percent == k)
                      & (rows["select"] == "attention")].text
        assert len(stored) == 1 and vlm.generate(image, question, knockout=kos, max_new_tokens=64).text == stored.iloc[0]
        assert (results / tag / f"verdict-table1@{tag}.json").is_file()
    answers = pd.read_parquet(results / "planted_answers.parquet")
    single = answers[answers.variant == "query/single"].groupby(["model", "question"])
    assert (single.image_id.nunique() > 1).any()  # some question was asked of several images: the check can fail
    assert (single.answer.nunique() == 1).all()


def check_fig7_localization(results: Path, model: str) -> None:
    """The page's published Figure 7 verdict equals claim_checks.finding3_check on the page's own stored
    localization, read back through the same runner (nothing recomputed)."""
    from vlmflow.localize import stored_localization

    p = SPECS["fig7_localization"].parameters(test=True, overrides={"model": model})
    loc = stored_localization(results, model=model, device=p["device"], dtype=p.get("dtype"), data=p["data"],
                              n_images=p["n_images"], seed=p["seed"], judge=p["judge"], judge_options={}, n_maps=0,
                              max_new_tokens=p.get("max_new_tokens", 64), toy_match=p.get("toy_match", "exact"),
                              progress=False)
    assert loc.provenance["computed_images"] == 0  # the page's own store, not a new computation
    verdict = json.loads((results / "verdict-finding3.json").read_text())
    _same_as_claim_checks("fig7_localization", verdict, "finding3_check", loc)


def check_across_architectures(results: Path, model: str, others: list[str]) -> None:
    """Each model's Finding 1 intervals are the mean over images of the exact judge's F1 between the all-layer
    knockout's and the unmasked description, read here from the model's stored sweep; its Figure 1 per-layer text
    attention is the mean of the stored attention rows; and the verdict table holds one row per (model, claim) with the
    outcome of the published verdict."""
    import numpy as np
    import pandas as pd

    from vlmflow.judge import get_judge
    from vlmflow.roles import GROUPS
    from vlmflow.store import load_results

    judge = get_judge("exact")
    models = list(dict.fromkeys([model, *others]))
    table = pd.read_csv(results / "across_verdicts.csv")
    assert len(table) == 4 * len(models) and set(table.model) == set(models)
    for name in models:
        tag = "arch_" + "".join(c if c.isalnum() else "_" for c in name).strip("_")
        while "__" in tag:
            tag = tag.replace("__", "_")
        rows = load_results(next((results / tag / "from_layer").glob("sweep-*")))
        base = rows[rows.spec_id == "none"].set_index("image").text
        f1 = json.loads((results / tag / f"verdict-finding1@{tag}.json").read_text())
        for ko_type, key in (("img->gen", "gen"), ("img->txt", "txt"), ("img->txt+gen", "floor")):
            ko = rows[(rows.ko_type == ko_type) & (rows.layer == -1) & ~rows.forced.fillna(False).astype(bool)]
            expected = np.mean([judge.judge(base[r.image], r.text).f1 for r in ko.itertuples()])
            assert f1["numbers"][key][0] == pytest.approx(expected), (name, ko_type)
        att = load_results(next((results / tag / "from_layer").glob("sweep-*")), "attention")
        text = att[[f"mass_{r}" for r in GROUPS["text"]]].sum(axis=1).groupby(att.layer).mean().sort_index()
        fig1 = json.loads((results / tag / f"verdict-fig1@{tag}.json").read_text())
        assert np.allclose([m[0] for m in fig1["numbers"]["mass"]], text.to_numpy(), atol=1e-9)
        for claim in ("fig1", "finding1", "finding2", "finding3"):
            outcome = json.loads((results / tag / f"verdict-{claim}@{tag}.json").read_text())["outcome"]
            (row,) = table[(table.model == name) & table.claim.str.startswith(
                {"fig1": "Figure 1", "finding1": "Finding 1", "finding2": "Finding 2", "finding3": "Finding 3"}[claim])
            ].itertuples()
            assert row.verdict == outcome


CHECKS = {"token_roles": check_token_roles, "fig1_attention_by_role": check_fig1_attention_by_role,
          "toy_world": check_toy_world, "fig3_judge": check_fig3_judge,
          "fig2_knockout_from_layer": check_fig2_knockout_from_layer, "middle_layers": check_middle_layers,
          "query_kinds": check_query_kinds, "visual_complexity": check_visual_complexity,
          "human_eval": check_human_eval, "generation_steps": check_generation_steps,
          "planted_models": check_planted_models, "fig7_localization": check_fig7_localization}


def check_video(results: Path, params: dict) -> None:
    """The route verdict's numbers are the bootstrap intervals of the stored clip sweep's all-layer knockouts (exact
    fact F1 against the unmasked clip description), which a second read returns without computing anything; the frame
    masses of every (clip, generated row, layer) cover each of the clip's 2-4 frames."""
    import numpy as np

    from vlmflow.stats import bootstrap_ci
    from vlmflow.video_analysis import stored_clip_sweep

    route = json.loads((results / "verdict-oq_video_route.json").read_text())
    rows, mass = stored_clip_sweep(results, model=params["model"], n_clips=params["n_clips"], seed=params["seed"],
                                   max_new_tokens=params["max_new_tokens"])
    assert rows.attrs["computed"] == 0  # read back: nothing recomputed
    for key, ko_type in (("gen", "img->gen"), ("txt", "img->txt"), ("floor", "img->txt+gen")):
        f1 = rows[(rows.ko_type == ko_type) & (rows.layer == -1) & ~rows.forced.astype(bool)].set_index("image").f1
        expected = bootstrap_ci(f1.to_numpy(dtype=float), n_resamples=params["n_resamples"], seed=params["seed"])
        np.testing.assert_allclose(route["numbers"][key], list(expected), rtol=0, atol=1e-9)
    assert set(mass.groupby(["image", "position", "layer"]).frame.count()) <= {2, 3, 4}
    for claim in ("oq_video_route", "oq_video_frames", "oq_video_localize", "oq_video_reprompt"):
        assert (results / f"verdict-{claim}.json").is_file(), claim


# checks that need more of the run's parameters than its model
PARAMETER_CHECKS = {"across_architectures": lambda results, p: check_across_architectures(results, p["model"],
                                                                                          p["others"]),
                    "video": check_video}


@pytest.mark.book
@pytest.mark.parametrize("name", list(SPECS))
def test_notebook_runs_with_test_parameters(name, tmp_path, notebook_model, secret_env, figure_overrides, request):
    spec = SPECS[name]
    overrides = {"model": notebook_model, **figure_overrides.get(name, {})}
    if spec.in_book:  # the test-mode book build ran it with exactly these parameters: check that run, not a repeat
        cwd, report = request.getfixturevalue("built_book")
        run = next(r for r in report.runs if r.name == name)
        params = run.parameters
        assert params == spec.parameters(test=True, overrides=overrides)
    else:  # a figure that waits for its toy model runs here only (figure_overrides: its shipped toy, or a tiny one)
        cwd = REPO
        params = spec.parameters(test=True, overrides=overrides, results_dir=tmp_path / "results")
        run = book.run_notebook(REPO / spec.notebook, tmp_path / f"{name}.ipynb", params, cwd=cwd,
                                log=tmp_path / f"{name}.log", name=name)
    results = Path(cwd) / params["results_dir"]
    executed = nbformat.read(run.output, as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "a cell did not run"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{name} shows no figure"
    assert secret_env not in run.output.read_text(), "the executed notebook contains OPENAI_API_KEY's value"
    if name in CHECKS:
        CHECKS[name](results, notebook_model)
    if name in PARAMETER_CHECKS:
        PARAMETER_CHECKS[name](results, params)

    if not spec.in_book:  # the book's notebooks are rerun together, two at a time (the test below)
        assert _rerun_reuses(name, params, cwd, tmp_path) is None


def _rerun_reuses(name: str, params: dict, cwd: Path, tmp_path: Path) -> str | None:
    """Rerun a notebook with the parameters of its first run: None when it reused the stored results and rewrote none
    of them, else what went wrong."""
    results = Path(cwd) / params["results_dir"]
    stamp = {p.name: p.stat().st_mtime_ns for p in results.iterdir() if p.suffix in (".parquet", ".json")}
    again = book.run_notebook(REPO / SPECS[name].notebook, tmp_path / f"{name}-2.ipynb", params, cwd=cwd,
                              log=tmp_path / f"{name}-2.log", name=name)
    if "reusing" not in again.output.read_text():
        return f"{name}: the rerun did not reuse its stored results"
    changed = sorted(n for n, t in stamp.items() if (results / n).stat().st_mtime_ns != t)
    return f"{name}: the rerun rewrote {', '.join(changed)}" if changed else None


@pytest.mark.book
def test_book_notebooks_reuse_their_results_on_a_rerun(built_book, tmp_path):
    """Every notebook of the test-mode book build, rerun with the same parameters, reuses the stored results and may
    not recompute them. Each rerun is its own papermill process, so two run at a time (one per core)."""
    from concurrent.futures import ThreadPoolExecutor

    cwd, report = built_book
    assert {run.name for run in report.runs} == {name for name, spec in SPECS.items() if spec.in_book}
    with ThreadPoolExecutor(max_workers=2) as pool:
        problems = list(pool.map(lambda run: _rerun_reuses(run.name, run.parameters, cwd, tmp_path), report.runs))
    assert not [p for p in problems if p], "\n".join(p for p in problems if p)


@pytest.mark.book
def test_across_architectures_refuses_a_model_that_does_not_load(tmp_path, notebook_model):
    """A model that does not load stops the page before any sweep, naming it; it is never skipped."""
    spec = SPECS["across_architectures"]
    params = spec.parameters(test=True, overrides={"model": notebook_model, "others": ["toy:no-such-model"]},
                             results_dir=tmp_path / "results")
    with pytest.raises(book.NotebookFailedError, match="toy:no-such-model"):
        book.run_notebook(REPO / spec.notebook, tmp_path / "out.ipynb", params, cwd=REPO, log=tmp_path / "log",
                          name="across_architectures")
    assert not list((tmp_path / "results").glob("arch_*"))  # nothing ran
