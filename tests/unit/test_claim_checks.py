"""vlmflow.claim_checks: each claim's intervals on synthetic rows whose answers are known by construction (means over
images, which rows count: all-layer knockouts only, the quarter-width windows only, the strictest tolerance, the
paper's subset when it holds enough objects), and the verdict those numbers must give."""
import numpy as np
import pandas as pd
import pytest

from vlmflow.roles import ROLES
from vlmflow.stats import CI
from vlmflow.verdicts import CONTRADICTED, REPRODUCED

IMAGES = ["a", "b", "c"]


def attention_rows(text_mass, text_share):
    """One row per (image, position, layer): the text group's mass on the query role (text_mass[image][layer]),
    the rest on the image; shares likewise."""
    rows = []
    for i, image in enumerate(IMAGES):
        for position in (10, 11):
            for layer, mass in enumerate(text_mass[i]):
                row = {"image": image, "position": position, "layer": layer}
                row |= {f"mass_{r}": 0.0 for r in ROLES} | {f"share_{r}": 0.0 for r in ROLES}
                row |= {"mass_query": mass, "mass_image": 1 - mass, "share_query": text_share,
                        "share_image": 1 - text_share}
                rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("masses,share,outcome", [
    ([[0.8, 0.9], [0.85, 0.95], [0.9, 0.7]], 0.1, REPRODUCED),  # far above 60% and above its 10% of the keys
    ([[0.02, 0.05], [0.03, 0.01], [0.04, 0.02]], 0.3, CONTRADICTED),  # far below its 30% of the keys
])
def test_fig1_check_per_layer_means_and_verdict(masses, share, outcome):
    from vlmflow.claim_checks import fig1_check

    att = attention_rows(masses, share)
    extra = attention_rows([[0.0, 0.0]] * 3, share).assign(image="z")  # an image outside `keys`: left out
    numbers, verdict = fig1_check(pd.concat([att, extra]), keys=IMAGES, n_resamples=200)
    m = np.array(masses)
    assert [c[0] for c in verdict.numbers["mass"]] == pytest.approx(m.mean(axis=0).tolist())
    assert [c[0] for c in verdict.numbers["ratio"]] == pytest.approx((m / share).mean(axis=0).tolist())
    assert numbers["text_attention"] == pytest.approx(m.mean())
    assert numbers["text_keys"] == pytest.approx(share)
    assert numbers["text_attention_low"] <= numbers["text_attention"] <= numbers["text_attention_high"]
    assert verdict.outcome == outcome


def knockout_rows(values, layer, forced=False):
    """Judged rows of the from-layer preset: values[ko_type] = F1 per image."""
    return [{"image": im, "family": "from-layer", "ko_type": k, "layer": layer, "forced": forced, "f1_baseline": f}
            for k, fs in values.items() for im, f in zip(IMAGES, fs)]


def test_finding1_check_uses_the_all_layer_knockouts_free_and_forced():
    from vlmflow.claim_checks import finding1_check

    free = {"img->gen": [0.7, 0.8, 0.9], "img->txt": [0.1, 0.0, 0.2], "img->txt+gen": [0.0, 0.0, 0.0]}
    forced = {"img->gen": [0.6, 0.6, 0.6], "img->txt": [0.5, 0.4, 0.3], "img->txt+gen": [0.2, 0.2, 0.2]}
    later = {"img->gen": [0.0] * 3, "img->txt": [1.0] * 3, "img->txt+gen": [1.0] * 3}  # KO from layer 0: not decisive
    scored = pd.DataFrame(knockout_rows(free, -1) + knockout_rows(forced, -1, True) + knockout_rows(later, 0)
                          + [{"image": im, "family": "baseline", "ko_type": "none", "layer": np.nan, "forced": None,
                              "f1_baseline": 1.0} for im in IMAGES])
    numbers, verdict = finding1_check(scored, n_resamples=200)
    assert numbers["ko_gen"] == pytest.approx(0.8) and numbers["ko_txt"] == pytest.approx(0.1)
    assert numbers["ko_floor"] == pytest.approx(0.0)
    assert numbers["ko_gen_forced"] == pytest.approx(0.6) and numbers["ko_txt_forced"] == pytest.approx(0.4)
    assert "ko_floor_forced" not in numbers
    assert verdict.outcome == REPRODUCED and verdict.numbers["txt_forced"][0] == pytest.approx(0.4)


def test_finding1_check_names_the_missing_knockout():
    from vlmflow.claim_checks import ClaimCheckError, finding1_check

    rows = knockout_rows({"img->gen": [0.5] * 3, "img->txt": [0.1] * 3}, -1)
    with pytest.raises(ClaimCheckError, match="ko_floor"):
        finding1_check(pd.DataFrame(rows), n_resamples=50)


@pytest.mark.parametrize("n_layers,widths,expected", [(8, None, 2), (80, None, 20), (2, None, 1), (3, None, 1),
                                                      (8, {1, 2, 4, 6}, 2), (8, {3, 5}, 3), (16, {2, 5, 8}, 5)])
def test_quarter_width(n_layers, widths, expected):
    from vlmflow.claim_checks import quarter_width

    assert quarter_width(n_layers, widths) == expected


def test_finding2_check_decides_on_the_quarter_width_windows():
    from vlmflow.claim_checks import finding2_check

    rows = []
    for width, best_start, best_f1 in ((2, 3, [0.8, 0.9, 1.0]), (4, 0, [1.0] * 3)):  # width 4: not decisive on 8
        for a in range(0, 8 - width + 1):
            for im, f in zip(IMAGES, best_f1 if a == best_start else [0.2, 0.1, 0.3]):
                rows.append({"image": im, "family": "window", "width": width, "window_start": a,
                             "window_end": a + width - 1, "f1_baseline": f})
    numbers, verdict = finding2_check(pd.DataFrame(rows), 8, CI(0.0, 0.0, 0.0), n_resamples=200)
    assert numbers["best_window"] == "3-4" and numbers["best_window_middle"]
    assert numbers["best_window_f1"] == pytest.approx(0.9)
    assert numbers["best_window_depth"] == pytest.approx(4 / 8)
    assert {b - a + 1 for a, b, _ in verdict.numbers["windows"]} == {2}
    assert len(verdict.numbers["windows"]) == 7
    assert verdict.outcome == REPRODUCED


class FakeLocalization:
    """What finding3_check reads of a LocalizationResult: provenance, objects and accuracy(by, subset)."""

    def __init__(self, n_lost):
        self.provenance = {"tolerances": [0, 1], "bands": [(0, 2), (2, 4), (4, 6), (6, 8)], "n_layers": 8}
        self.objects = pd.DataFrame([{"image_id": f"i{k // 2}", "object": "circle", "occurrence": k % 2,
                                      "present": True, "lost": k < n_lost} for k in range(30)])
        self.asked = []

    def accuracy(self, by, subset, n_resamples=1000, seed=0):
        self.asked.append((by, subset))
        strict = [(0.10, 0.05, 0.15), (0.30, 0.20, 0.40), (0.70, 0.60, 0.80), (0.40, 0.30, 0.50)]
        loose = [(0.95, 0.90, 1.00), (0.20, 0.10, 0.30), (0.20, 0.10, 0.30), (0.20, 0.10, 0.30)]  # tolerance 1
        return pd.DataFrame([{"band": f"{s}-{e - 1}", "tolerance": tol, "accuracy": a, "accuracy_low": lo,
                              "accuracy_high": hi, "chance": 0.2}
                             for tol, values in ((0, strict), (1, loose))
                             for (s, e), (a, lo, hi) in zip(self.provenance["bands"], values)])


@pytest.mark.parametrize("n_lost,subset", [(25, "lost"), (19, "all")])
def test_finding3_check_strictest_tolerance_and_the_papers_subset_when_large_enough(n_lost, subset):
    from vlmflow.claim_checks import finding3_check

    loc = FakeLocalization(n_lost)
    numbers, verdict = finding3_check(loc, n_resamples=50)
    assert loc.asked == [("band", subset)] and numbers["localization_subset"] == subset
    assert numbers["peak_band"] == "4-5" and numbers["peak_band_middle"]
    assert numbers["peak_band_accuracy"] == pytest.approx(0.7) and numbers["peak_band_chance"] == pytest.approx(0.2)
    assert verdict.outcome == REPRODUCED
    assert (f"{n_lost} objects lost" if subset == "lost" else "all 30 named objects") in verdict.measured
