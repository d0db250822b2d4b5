"""lib.claims: every sentence that compares or ranks is made from a seed-aware interval.

The evaluate.json input is made by lib.evaluate.summary.summarise over small hand-built
predictions (2-3 seeds per configuration) and sent through json like the stage does; the
explain.json input is a minimal hand-written dict with the keys explanation_claims reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lib import claims
from lib.evaluate import metrics as ev
from lib.evaluate.summary import summarise
from lib.stats import paired_difference, seed_interval
from tests.test_seeds import RESAMPLES, make_pred, probs_with_errors, spread


def stat(values: list[float]) -> dict:
    return {**seed_interval(values), "values": values}


def pair(a: str = "A", b: str = "B", holds: bool = True, **kw: object) -> dict:
    out = {"a": a, "b": b, "estimate": 0.05, "interval": [0.02, 0.08], "p": 0.004,
           "p_holm": 0.012, "test": "Welch t-test over seeds (3 vs 3)", "holds": holds}
    return {**out, **kw}


# ------------------------------------------------------------------ comparison claims
def test_comparison_claim_says_beats_only_when_it_holds() -> None:
    won = claims.comparison_claim(pair(holds=True), "test macro-F1")
    assert won["statement"].startswith("A beats B on test macro-F1 (A − B = +0.050, "
                                       "95 % CI 0.020 to 0.080; Welch")
    assert "Holm-adjusted p = 0.012" in won["statement"]
    assert won["holds"] is True and won["winner"] == "A" and won["kind"] == "comparison"
    assert won["interval"] == [0.02, 0.08] and won["p_holm"] == 0.012
    lost = claims.comparison_claim(pair(holds=False, interval=[-0.01, 0.11], p_holm=0.2),
                                   "test macro-F1")
    assert lost["statement"].startswith("No difference shown between A and B on test macro-F1")
    assert "beats" not in lost["statement"] and "-0.010 to 0.110" in lost["statement"]
    assert lost["holds"] is False and lost["winner"] is None


def test_a_difference_the_other_way_names_the_other_winner() -> None:
    """A shown difference below zero is b beating a, not 'no difference'; for a lower-is-better
    measure (ECE) a negative difference is a win for a."""
    lost = claims.comparison_claim(pair(estimate=-0.4, interval=[-0.45, -0.35], p_holm=None,
                                        p=0.001), "pointing game", kind="method")
    assert lost["statement"].startswith("B beats A on pointing game (A − B = -0.400")
    assert lost["winner"] == "B" and lost["holds"] is True
    ece = claims.comparison_claim(pair(estimate=-0.02, interval=[-0.03, -0.01]), "ECE",
                                  kind="calibration", higher_is_better=False,
                                  verb="is better calibrated than")
    assert ece["statement"].startswith("A is better calibrated than B on ECE")
    assert ece["winner"] == "A"


def test_comparison_claim_without_holm_or_interval() -> None:
    raw = claims.comparison_claim(pair(p_holm=None, p=0.03), "pointing game", kind="method")
    assert "p = 0.03" in raw["statement"] and "Holm" not in raw["statement"]
    one = claims.comparison_claim(pair(holds=False, interval=None, p=None, p_holm=None), "x")
    assert "no interval: one seed" in one["statement"]
    assert one["statement"].endswith("(3 vs 3)).")  # no p at all


def test_comparison_claim_id_does_not_depend_on_which_is_a() -> None:
    ab = claims.comparison_claim(pair("scratch_none", "transfer"), "test macro-F1")
    ba = claims.comparison_claim(pair("transfer", "scratch_none", holds=False), "test macro-F1")
    assert ab["id"] == ba["id"] == "comparison:test_macro-F1:scratch_none|transfer"
    other_kind = claims.comparison_claim(pair("scratch_none", "transfer"), "test macro-F1",
                                         kind="ensemble")
    assert other_kind["id"] != ab["id"] and other_kind["kind"] == "ensemble"


# ------------------------------------------------------------------ target claims
@pytest.mark.parametrize(("interval", "verdict"), [
    ([0.82, 0.90], "met"), ([0.80, 0.90], "met"),  # the bound itself clears it
    ([0.60, 0.75], "missed"),
    ([0.75, 0.85], "not settled"),
])
def test_target_claim_reads_the_whole_interval(interval: list[float], verdict: str) -> None:
    s = {"mean": float(np.mean(interval)), "sd": 0.03, "n": 3, "interval": interval}
    claim = claims.target_claim("target:x", "the pointing game", s, 0.8)
    assert claim["verdict"] == verdict
    assert claim["holds"] is (verdict == "met")
    assert claim["kind"] == "target" and claim["target"] == 0.8 and claim["id"] == "target:x"
    assert claim["statement"].startswith("the pointing game: ")
    assert "target >= 0.8" in claim["statement"]
    assert claim["estimate"] == s["mean"] and claim["interval"] == interval


@pytest.mark.parametrize(("interval", "verdict"), [
    ([0.01, 0.05], "met"), ([0.05, 0.10], "met"),
    ([0.12, 0.30], "missed"),
    ([0.05, 0.15], "not settled"),
])
def test_lower_is_better_targets(interval: list[float], verdict: str) -> None:
    s = {"mean": float(np.mean(interval)), "sd": 0.02, "n": 3, "interval": interval}
    claim = claims.target_claim("target:rate", "shortcut rate", s, 0.1, higher_is_better=False)
    assert claim["verdict"] == verdict and claim["holds"] is (verdict == "met")
    assert "target <= 0.1" in claim["statement"]


def test_one_seed_target_is_not_settled_even_when_its_mean_clears_it() -> None:
    s = seed_interval([0.95])
    claim = claims.target_claim("target:x", "pointing game", s, 0.8)
    assert claim["holds"] is False and claim["verdict"] == "not settled"
    assert "one seed" in claim["statement"] and claim["interval"] is None
    low = claims.target_claim("target:x", "rate", seed_interval([0.0]), 0.1,
                              higher_is_better=False)
    assert low["holds"] is False and low["verdict"] == "not settled"


def test_number_format() -> None:
    s = stat([0.90, 0.92, 0.94])
    text = claims.target_claim("t", "x", s, 0.5)["statement"]
    lo, hi = s["interval"]
    assert f"x: 0.920 ± 0.020 (95 % CI {lo:.3f} to {hi:.3f}, 3 seeds)" in text


# ------------------------------------------------------------------ build from the stage jsons
PLAN = {  # key: (wrong test images, wrong val images); A best on test, B on validation
    "A_s1": (0, 8), "A_s2": (1, 9), "A_s3": (2, 8),
    "B_s1": (5, 0), "B_s2": (7, 1),
    "C_s1": (12, 6), "C_s2": (13, 5), "C_s3": (14, 7),
}


@pytest.fixture(scope="module")
def evaluate_json() -> dict:
    evaluations = {}
    for key, (t, v) in PLAN.items():
        pred = make_pred(key, probs_with_errors(spread(t)), probs_with_errors(spread(v)))
        evaluations[key] = ev.evaluate_model(pred, resamples=RESAMPLES, seed=0)
    report = summarise(evaluations, resamples=RESAMPLES, seed=0, level=0.95, alpha=0.05)
    return json.loads(json.dumps(report))


def explain_json() -> dict:
    hires = {"A": [0.70, 0.72, 0.74], "B": [0.81, 0.84, 0.86]}
    grad = {"A": [0.25, 0.28, 0.31], "B": [0.30, 0.35, 0.33]}
    occl = {"A": [0.60, 0.73, 0.80], "B": [0.50, 0.55, 0.52]}
    configurations = {
        name: {"seeds": [1, 2, 3],
               "localisation": {"hirescam": {"pointing_game": stat(hires[name])},
                                "gradcam": {"pointing_game": stat(grad[name])},
                                "occlusion": {"pointing_game": stat(occl[name])}},
               "shortcut": {"rate": stat([0.03, 0.04, 0.035]),
                            "excess": stat([0.0, 0.05, 0.10])}}
        for name in ("A", "B")}
    comparisons = []
    for other in ("gradcam", "occlusion"):
        diff = paired_difference(hires["B"], configurations["B"]["localisation"][other]
                                 ["pointing_game"]["values"])
        comparisons.append({"configuration": "B", "a": "hirescam", "b": other,
                            "metric": "pointing_game", **diff,
                            "holds": bool(diff["interval"][0] > 0)})
    return {
        "target": {"pointing_game": 0.8, "gradcam_pointing_game": 0.6, "shortcut_rate": 0.1,
                   "shortcut_excess": 0.05, "best_pointing_game": 0.84},
        "best_configuration": "B", "headline_method": "hirescam", "best_model": "B_s1",
        "validation": {"model": "B_s1", "criterion": "highest validation pointing game"},
        "method_comparisons": comparisons,
        "configurations": configurations,
    }


def test_the_synthetic_evaluate_json_is_what_the_claims_need(evaluate_json: dict) -> None:
    assert evaluate_json["best_configuration"] == "B"
    conf = evaluate_json["configurations"]
    assert conf["A"]["test_macro_f1"]["mean"] > conf["B"]["test_macro_f1"]["mean"]
    assert len(evaluate_json["comparisons"]) == 3 and sorted(evaluate_json["ensembles"]) == [
        "A", "B", "C"]


def test_build_makes_one_well_formed_claim_per_sentence(evaluate_json: dict) -> None:
    payload = claims.build(evaluate_json, explain_json())
    assert payload["level"] == 0.95 and payload["alpha"] == 0.05
    assert payload["seeds"] == {"A": [1, 2, 3], "B": [1, 2], "C": [1, 2, 3]}
    all_claims = payload["claims"]
    for c in all_claims:
        assert {"id", "kind", "statement", "holds"} <= set(c), c
        assert isinstance(c["holds"], bool) and c["statement"].endswith(".")
    ids = [c["id"] for c in all_claims]
    assert len(ids) == len(set(ids))
    kinds = [c["kind"] for c in all_claims]
    assert kinds.count("selection") == 2 and kinds.count("comparison") == 3
    assert kinds.count("ensemble") == kinds.count("calibration") == 3
    assert kinds.count("method") == 2 and kinds.count("target") == 4
    json.dumps(payload, allow_nan=False)  # plain json


def test_build_selection_and_comparisons_follow_evaluate_json(evaluate_json: dict) -> None:
    by_id = {c["id"]: c for c in claims.build(evaluate_json, explain_json())["claims"]}
    best = by_id["select:best_configuration"]
    assert best["winner"] == "B" and "is B: test macro-F1" in best["statement"]
    assert best["estimate"] == evaluate_json["configurations"]["B"]["test_macro_f1"]["mean"]
    for p in evaluate_json["comparisons"]:
        c = by_id[f"comparison:test_macro-F1:{'|'.join(sorted((p['a'], p['b'])))}"]
        assert c["holds"] is p["holds"]
        assert c["statement"].startswith(f"{p['a']} beats {p['b']}" if p["holds"]
                                         else "No difference shown")
    # A and C are far apart on every seed: that one is shown
    assert by_id["comparison:test_macro-F1:A|C"]["holds"] is True
    headline = by_id["select:headline_method"]
    assert headline["winner"] == "hirescam" and "configuration (B)" in headline["statement"]


def test_build_explanation_targets(evaluate_json: dict) -> None:
    by_id = {c["id"]: c for c in claims.build(evaluate_json, explain_json())["claims"]}
    assert by_id["target:headline_pointing_game"]["verdict"] == "not settled"  # 0.81-0.86
    assert by_id["target:gradcam_pointing_game"]["verdict"] == "missed"
    assert by_id["target:shortcut_rate"]["verdict"] == "met"
    assert by_id["target:shortcut_excess"]["verdict"] == "not settled"
    assert "on B (test tumours)" in by_id["target:headline_pointing_game"]["statement"]
    methods = [c for c in by_id.values() if c["kind"] == "method"]
    assert {(c["a"], c["b"]) for c in methods} == {("hirescam", "gradcam"),
                                                   ("hirescam", "occlusion")}
    assert all(c["holds"] for c in methods)  # hirescam clears both on every seed


def test_build_metrics_list_every_seed_aware_number(evaluate_json: dict) -> None:
    metrics = claims.build(evaluate_json, explain_json())["metrics"]
    ids = [m["id"] for m in metrics]
    assert len(ids) == len(set(ids))
    for name in ("A", "B", "C"):
        for key in ("test_macro_f1", "test_accuracy", "test_ece", "val_macro_f1"):
            assert f"{key}:{name}" in ids
    assert "pointing_game:B:hirescam" in ids and "shortcut_rate:A" in ids
    m = next(m for m in metrics if m["id"] == "test_macro_f1:A")
    expected = evaluate_json["configurations"]["A"]["test_macro_f1"]
    assert (m["mean"], m["sd"], m["n"], m["interval"]) == (
        expected["mean"], expected["sd"], 3, expected["interval"])


def test_an_expensive_headline_method_has_one_seed_and_no_verdict() -> None:
    ex = explain_json()
    ex["headline_method"] = "scorecam"  # not measured on every seed
    ex["method_comparisons"] = []
    made, _ = claims.explanation_claims(ex)
    target = next(c for c in made if c["id"] == "target:headline_pointing_game")
    assert target["estimate"] == 0.84 and target["interval"] is None
    assert target["holds"] is False and target["verdict"] == "not settled"
    ex["target"]["best_pointing_game"] = None
    assert "target:headline_pointing_game" not in [c["id"] for c in
                                                   claims.explanation_claims(ex)[0]]


# ------------------------------------------------------------------ status block and README
def payload_of(*made: dict) -> dict:
    return {"level": 0.95, "alpha": 0.05, "seeds": {"A": [3, 1], "B": [2]},
            "claims": list(made), "metrics": []}


def test_status_markdown_lists_selections_first_and_counts_what_did_not_hold() -> None:
    sel = {"id": "select:x", "kind": "selection", "holds": True, "statement": "Chose X."}
    tgt = {"id": "target:t", "kind": "target", "holds": False, "statement": "Target missed."}
    won = claims.comparison_claim(pair("A", "B"), "m")
    lost = [claims.comparison_claim(pair("A", x, holds=False), "m") for x in ("C", "D")]
    ens_lost = claims.comparison_claim(pair("A", "E", holds=False), "m", kind="ensemble")
    text = claims.status_markdown(payload_of(tgt, won, *lost, sel, ens_lost))
    lines = text.splitlines()
    assert lines[0].startswith("Generated from `reports/metrics/claims.json` (seeds 1, 2, 3; "
                               "95 % intervals")
    bullets = [line for line in lines if line.startswith("- ")]
    assert bullets[0] == "- Chose X."
    assert bullets[1] == f"- {won['statement']}"
    assert bullets[2] == "- Target missed."
    assert bullets[3] == "- 3 other comparison(s) showed no difference (listed in the report)."
    assert len(bullets) == 4 and "No difference shown" not in text


def test_status_markdown_of_a_built_payload(evaluate_json: dict) -> None:
    payload = claims.build(evaluate_json, explain_json())
    text = claims.status_markdown(payload)
    not_held = sum(1 for c in payload["claims"]
                   if c["kind"] not in ("selection", "target") and not c["holds"])
    assert f"- {not_held} other comparison(s) showed no difference" in text
    bullets = [line for line in text.splitlines() if line.startswith("- ")]
    assert bullets[0].startswith("- The best configuration on validation")
    assert bullets[1].startswith("- The headline saliency method")


README_TEXT = """# Study

Intro paragraph.

<!-- claims:start -->
old status that must go
- stale line
<!-- claims:end -->

## Later section
keep me
"""


def test_update_readme_replaces_only_the_marked_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README_TEXT)
    payload = payload_of({"id": "select:x", "kind": "selection", "holds": True,
                          "statement": "Chose X."})
    assert claims.update_readme(readme, payload) is True
    text = readme.read_text()
    assert "old status" not in text and "stale line" not in text
    before, rest = text.split(claims.README_START)
    block, after = rest.split(claims.README_END)
    assert before == "# Study\n\nIntro paragraph.\n\n"
    assert after == "\n\n## Later section\nkeep me\n"
    assert block == f"\n{claims.status_markdown(payload)}\n"
    assert claims.update_readme(readme, payload) is False  # already current
    assert readme.read_text() == text


def test_update_readme_without_markers_is_an_error(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Study\n<!-- claims:start -->\nno end marker\n")
    with pytest.raises(ValueError, match="claims:start"):
        claims.update_readme(readme, payload_of())
    assert readme.read_text() == "# Study\n<!-- claims:start -->\nno end marker\n"


# ------------------------------------------------------------------ command line
def test_main_build_writes_claims_json(tmp_path: Path, evaluate_json: dict,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    evaluate, explain, out = tmp_path / "evaluate.json", tmp_path / "explain.json", \
        tmp_path / "out" / "claims.json"
    evaluate.write_text(json.dumps(evaluate_json))
    explain.write_text(json.dumps(explain_json()))
    code = claims.main(["build", "--evaluate", str(evaluate), "--explain", str(explain),
                        "--shortcut", str(tmp_path / "no_shortcut.json"),
                        "--fusion", str(tmp_path / "no_fusion.json"), "--out", str(out)])
    assert code == 0
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(claims.build(evaluate_json, explain_json())))
    held = sum(c["holds"] for c in written["claims"])
    assert f"claims: {held} of {len(written['claims'])} hold" in capsys.readouterr().out
    readme = tmp_path / "README.md"
    readme.write_text(README_TEXT)
    assert claims.main(["readme", "--out", str(out), "--readme", str(readme)]) == 0
    assert claims.status_markdown(written) in readme.read_text()


def test_main_with_missing_inputs_returns_2(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    explain = tmp_path / "explain.json"
    explain.write_text("{}")
    out = tmp_path / "claims.json"
    code = claims.main(["build", "--evaluate", str(tmp_path / "nope.json"), "--explain",
                        str(explain), "--out", str(out)])
    assert code == 2 and not out.exists()
    assert "nope.json" in capsys.readouterr().err
    assert claims.main(["readme", "--out", str(out), "--readme", str(tmp_path / "R.md")]) == 2


# ------------------------------------------------------------------ the guided arm
def guided_inputs(f1_guided: list[float], pg_guided: list[float]) -> tuple[dict, dict]:
    seeds = [42, 43, 44]
    ev = {"configurations": {
        "scratch_batchnorm": {"seeds": seeds, "test_macro_f1": stat([0.90, 0.92, 0.91])},
        "guided_scratch_batchnorm": {"seeds": seeds, "test_macro_f1": stat(f1_guided)},
        "transfer": {"seeds": seeds, "test_macro_f1": stat([0.93, 0.95, 0.94])}}}
    loc = {"pointing_game": stat([0.20, 0.30, 0.25]), "pointing_game_tol": stat([0.3, 0.4, 0.35])}
    ex = {"configurations": {
        "scratch_batchnorm": {"seeds": seeds, "localisation": {"gradcam": loc, "hirescam": loc}},
        "guided_scratch_batchnorm": {"seeds": seeds, "localisation": {
            "gradcam": {"pointing_game": stat(pg_guided),
                        "pointing_game_tol": stat([p + 0.05 for p in pg_guided])},
            "hirescam": {"pointing_game": stat(pg_guided),
                         "pointing_game_tol": stat(pg_guided)}}}}}
    return ev, ex


def test_guidance_is_paired_by_seed_holm_corrected_and_held_to_its_targets() -> None:
    ev, ex = guided_inputs([0.91, 0.93, 0.915], [0.90, 0.93, 0.91])
    out, _ = claims.guidance_claims(ev, ex, 0.05)
    by_id = {c["id"]: c for c in out}
    f1 = by_id["guidance:test_macro-F1:guided_scratch_batchnorm|scratch_batchnorm"]
    assert f1["test"] == "paired t-test over seeds (n = 3)"
    assert f1["estimate"] == pytest.approx(np.mean([0.01, 0.01, 0.005]))
    assert f1["p_holm"] >= f1["p"]  # Holm over the family
    assert by_id["target:guided_not_worse:guided_scratch_batchnorm"]["verdict"] == "met"
    gc = by_id["target:guided_pointing_game:guided_scratch_batchnorm:gradcam"]
    assert gc["verdict"] == "met" and gc["target"] == 0.80  # 0.85-0.97 clears 0.80
    hi = by_id["target:guided_pointing_game:guided_scratch_batchnorm:hirescam"]
    assert hi["verdict"] == "not settled" and hi["target"] == 0.90
    moved = by_id["guidance:pointing_game_(gradcam):guided_scratch_batchnorm|scratch_batchnorm"]
    assert moved["holds"] and moved["winner"] == "guided_scratch_batchnorm"
    assert not any("transfer" in c["id"] for c in out)  # no guided twin, no guidance claim


def test_a_guided_model_that_classifies_worse_misses_the_not_worse_target() -> None:
    ev, ex = guided_inputs([0.80, 0.81, 0.805], [0.5, 0.5, 0.5])
    out, _ = claims.guidance_claims(ev, ex, 0.05)
    worse = next(c for c in out if c["id"].startswith("target:guided_not_worse"))
    assert worse["verdict"] == "missed" and worse["interval"][1] < 0
    assert "missed" in worse["statement"]


def shortcut_json(plain_drop: list[float], guided_drop: list[float]) -> dict:
    def arm(drops: list[float]) -> dict:
        clean = [0.9 - d for d in drops]
        return {"drop": stat(drops), "f1_clean": stat(clean),
                "f1_marked": stat([0.9] * len(drops)), "gradcam_on_marker": stat([0.5] * 3)}

    guided = {k: paired_difference(arm(guided_drop)[k]["values"], arm(plain_drop)[k]["values"])
              for k in ("f1_clean", "drop", "gradcam_on_marker")}
    return {"targets": {"plain_drop": 0.15, "guided_drop": 0.05}, "plain": arm(plain_drop),
            "guided": arm(guided_drop), "guided_minus_plain": guided}


def test_shortcut_claims_say_whether_the_shortcut_is_real_and_whether_guidance_stops_it(
        ) -> None:
    out, metrics = claims.shortcut_claims(shortcut_json([0.40, 0.45, 0.42], [0.01, 0.02, 0.0]))
    by_id = {c["id"]: c for c in out}
    assert by_id["target:shortcut_test:plain_drop"]["verdict"] == "met"
    assert by_id["target:shortcut_test:guided_drop"]["verdict"] == "met"
    drop = by_id["shortcut:macro-F1_lost_without_the_marker:guided|plain"]
    assert drop["holds"] and drop["winner"] == "guided" and drop["p_holm"] >= drop["p"]
    assert len(metrics) == 6
    out, _ = claims.shortcut_claims(shortcut_json([0.01, 0.02, 0.0], [0.01, 0.03, 0.0]))
    by_id = {c["id"]: c for c in out}
    assert by_id["target:shortcut_test:plain_drop"]["verdict"] == "missed"  # no shortcut learnt
    assert claims.shortcut_claims(None) == ([], [])


def test_fusion_claims_pair_the_arms_by_seed_with_holm_over_every_image_model() -> None:
    """What metadata adds is fusion - image_head on the same seeds; the p-values are adjusted
    over all comparisons of all image models; every arm becomes a metric."""
    from lib.evaluate.fusion import comparisons, summarise

    def arms(fusion_gain: float) -> dict:
        base = {42: 0.90, 43: 0.92, 44: 0.91}
        return {"image": {s: {"macro_f1": v} for s, v in base.items()},
                "image_head": {s: {"macro_f1": v + 0.01} for s, v in base.items()},
                "fusion": {s: {"macro_f1": v + 0.01 + fusion_gain + 0.001 * (s - 43)}
                           for s, v in base.items()}}

    fu = {"image_models": {name: {"arms": summarise(a), "comparisons": comparisons(a)}
                           for name, a in (("cnn", arms(0.10)), ("tl", arms(0.0)))},
          "metadata_only": summarise({"m": {42: {"macro_f1": 0.3}, 43: {"macro_f1": 0.32}}})["m"]}
    found, metrics = claims.fusion_claims(fu, alpha=0.05)
    assert len(found) == 6 and all(c["kind"] == "fusion" for c in found)
    gain = next(c for c in found if c["a"] == "fusion:cnn" and c["b"] == "image_head:cnn")
    assert gain["holds"] and gain["winner"] == "fusion:cnn"
    assert gain["estimate"] == pytest.approx(0.10)
    raw = [c["p"] for c in found if c["p"] is not None]
    assert all(c["p_holm"] >= c["p"] for c in found if c["p"] is not None) and len(raw) == 6
    none = next(c for c in found if c["a"] == "fusion:tl" and c["b"] == "image_head:tl")
    assert not none["holds"] and none["winner"] is None
    assert len(metrics) == 2 * 3 + 1 and metrics[-1]["id"] == "fusion:metadata"
    assert claims.fusion_claims(None) == ([], [])
