"""The study's conclusions as data: every sentence that ranks, compares or calls something better.

``build`` reads evaluate.json and explain.json and writes ``reports/metrics/claims.json``: each
claim with its numbers, its interval, the test behind it and whether it holds. The report's
summary, the README's status paragraph and the notebooks print ``statement`` and nothing else,
so no document can say more than the statistics carry:

- "A beats B" only when the seed-aware interval of the difference excludes zero (Welch over
  seeds, Holm over the pairs: lib.evaluate.seeds); otherwise the sentence says no difference
  was shown, with the interval;
- a target is "met" only when the whole interval over seeds clears it, "missed" when the whole
  interval falls short, and "not settled" when the interval straddles it;
- a guided configuration (lib.train.guided) is compared with the plain one it was fine-tuned
  from, paired by seed (``guidance_claims``), and held to the guided arm's targets;
- ``metrics`` lists every seed-aware number (mean, sd, interval), which the cross-machine check
  (``make crosscheck``) compares between runs.

Run as the `claims` stage: ``python -m lib.claims build``; ``python -m lib.claims readme``
rewrites the README's status block from claims.json (a test checks they agree).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .jsonio import write_json
from .stats import holm, paired_difference

EVALUATE_JSON = Path("reports/metrics/evaluate.json")
EXPLAIN_JSON = Path("reports/metrics/explain.json")
SHORTCUT_JSON = Path("reports/metrics/shortcut.json")
FUSION_JSON = Path("reports/metrics/fusion.json")
CLAIMS_JSON = Path("reports/metrics/claims.json")
README = Path("README.md")
README_START, README_END = "<!-- claims:start -->", "<!-- claims:end -->"


def _ci(interval: Sequence[float] | None, digits: int = 3) -> str:
    if interval is None:
        return "no interval: one seed"
    return f"{interval[0]:.{digits}f} to {interval[1]:.{digits}f}"


def _num(stat: dict[str, Any]) -> str:
    """'0.921 ± 0.012 (95 % CI 0.89 to 0.95, 3 seeds)'."""
    sd = f" ± {stat['sd']:.3f}" if stat.get("sd") is not None else ""
    return f"{stat['mean']:.3f}{sd} (95 % CI {_ci(stat.get('interval'))}, {stat['n']} seeds)"


def comparison_claim(pair: dict[str, Any], label: str, kind: str = "comparison",
                     higher_is_better: bool = True, verb: str = "beats") -> dict[str, Any]:
    """A claim from a seed-aware difference: `pair` has a, b, estimate (a - b), interval, p,
    test and holds (the difference is shown, by the test's own rule). The winner follows from
    the estimate's sign; the id names the pair in sorted order, so it is the same on every run
    whichever way the difference goes."""
    a, b = pair["a"], pair["b"]
    ident = f"{kind}:{label.replace(' ', '_')}:{'|'.join(sorted((a, b)))}"
    p_text = (f", Holm-adjusted p = {pair['p_holm']:.2g}" if pair.get("p_holm") is not None
              else f", p = {pair['p']:.2g}" if pair.get("p") is not None else "")
    detail = (f"{a} − {b} = {pair['estimate']:+.3f}, 95 % CI {_ci(pair['interval'])}; "
              f"{pair['test']}{p_text}")
    winner = None
    if pair["holds"]:
        winner, loser = (a, b) if (pair["estimate"] > 0) == higher_is_better else (b, a)
        statement = f"{winner} {verb} {loser} on {label} ({detail})."
    else:
        statement = f"No difference shown between {a} and {b} on {label} ({detail})."
    return {"id": ident, "kind": kind, "statement": statement, "holds": bool(pair["holds"]),
            "winner": winner, "metric": label, "a": a, "b": b,
            "estimate": pair["estimate"], "interval": pair["interval"], "test": pair["test"],
            "p": pair.get("p"), "p_holm": pair.get("p_holm")}


def target_claim(ident: str, what: str, stat: dict[str, Any], target: float,
                 higher_is_better: bool = True) -> dict[str, Any]:
    """Met when the whole interval clears the target, missed when it all falls short; with one
    seed there is no interval, and the verdict says so instead of guessing."""
    word = ">=" if higher_is_better else "<="
    if stat.get("interval") is None:
        met = missed = False
        verdict = "not settled (one seed: no interval)"
    else:
        lo, hi = stat["interval"]
        met, missed = (lo >= target, hi < target) if higher_is_better else (hi <= target,
                                                                           lo > target)
        verdict = ("met" if met else "missed" if missed
                   else "not settled (the interval straddles it)")
    return {"id": ident, "kind": "target", "holds": bool(met), "winner": None,
            "statement": f"{what}: {_num(stat)}; target {word} {target:g} {verdict}.",
            "estimate": stat["mean"], "interval": stat.get("interval"), "target": target,
            "verdict": verdict.split(" (")[0],
            "test": "t-interval over seeds"}


def _metric(ident: str, label: str, stat: dict[str, Any]) -> dict[str, Any]:
    return {"id": ident, "label": label, "mean": stat["mean"], "sd": stat.get("sd"),
            "n": stat["n"], "interval": stat.get("interval")}


def classification_claims(ev: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict]]:
    """Claims and metrics from evaluate.json: the best configuration, every pairwise comparison,
    each seed ensemble against its members and against temperature scaling."""
    configs = ev["configurations"]
    best = ev["best_configuration"]
    stat = configs[best]["test_macro_f1"]
    claims = [{
        "id": "select:best_configuration", "kind": "selection", "holds": True, "winner": best,
        "statement": (f"The best configuration on validation (mean macro-F1 over its seeds) is "
                      f"{best}: test macro-F1 {_num(stat)}."),
        "estimate": stat["mean"], "interval": stat["interval"], "test": ev["best_model_rule"]}]
    claims += [comparison_claim(p, "test macro-F1") for p in ev["comparisons"]]
    for name, ens in sorted(ev["ensembles"].items()):
        pair = {"a": f"{name} ensemble", "b": f"{name} members (mean)", **ens["vs_members"]}
        claims.append(comparison_claim(pair, "test macro-F1", kind="ensemble"))
        pair = {"a": f"{name} ensemble (no scaling)",
                "b": f"{name} members after temperature scaling",
                **ens["calibration"]["vs_temperature_scaling"]}
        claims.append(comparison_claim(pair, "ECE", kind="calibration", higher_is_better=False,
                                       verb="is better calibrated than"))
    metrics = []
    for name, c in sorted(configs.items()):
        for key, label in (("test_macro_f1", "test macro-F1"), ("test_accuracy", "test accuracy"),
                           ("test_ece", "test ECE"), ("val_macro_f1", "validation macro-F1")):
            metrics.append(_metric(f"{key}:{name}", f"{label}, {name}", c[key]))
    return claims, metrics


def explanation_claims(ex: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict]]:
    """Claims and metrics from explain.json: the headline method, its lead over the other cheap
    methods (paired over seeds), its pointing-game target and the shortcut control."""
    target = ex["target"]
    best = ex.get("best_configuration")
    headline = ex["headline_method"]
    val = ex.get("validation", {})
    claims = [{
        "id": "select:headline_method", "kind": "selection", "holds": True, "winner": headline,
        "statement": (f"The headline saliency method, chosen by its pointing game on validation "
                      f"tumour images of the best configuration ({best or ex['best_model']}), "
                      f"is {headline}."),
        "estimate": None, "interval": None,
        "test": val.get("criterion", "the cheapest method (no validation pass)")}]
    claims += [comparison_claim(p, f"pointing game ({p['configuration']})", kind="method")
               for p in ex.get("method_comparisons", [])]
    conf = ex.get("configurations", {}).get(best, {}) if best else {}
    loc = conf.get("localisation", {})
    if headline in loc:  # a cheap method: measured on every seed
        stat = loc[headline]["pointing_game"]
    else:  # an expensive one runs on the lowest seed only
        stat = {"mean": target["best_pointing_game"], "sd": None, "n": 1, "interval": None}
    if stat["mean"] is not None:
        claims.append(target_claim("target:headline_pointing_game",
                                   f"{headline}'s pointing game on {best} (test tumours)",
                                   stat, target["pointing_game"]))
    if "gradcam" in loc:
        claims.append(target_claim("target:gradcam_pointing_game",
                                   f"gradcam's pointing game on {best} (test tumours)",
                                   loc["gradcam"]["pointing_game"],
                                   target["gradcam_pointing_game"]))
    shortcut = conf.get("shortcut", {})
    if "rate" in shortcut:
        claims.append(target_claim("target:shortcut_rate",
                                   f"healthy twins called a tumour by {best}", shortcut["rate"],
                                   target["shortcut_rate"], higher_is_better=False))
    if "excess" in shortcut:
        claims.append(target_claim("target:shortcut_excess",
                                   f"twins called a tumour beyond real healthy scans by {best}",
                                   shortcut["excess"], target["shortcut_excess"],
                                   higher_is_better=False))
    metrics = []
    for name, c in sorted(ex.get("configurations", {}).items()):
        for method, scores in sorted(c.get("localisation", {}).items()):
            metrics.append(_metric(f"pointing_game:{name}:{method}",
                                   f"pointing game, {method}, {name}", scores["pointing_game"]))
        if "rate" in c.get("shortcut", {}):
            metrics.append(_metric(f"shortcut_rate:{name}", f"twins called a tumour, {name}",
                                   c["shortcut"]["rate"]))
    return claims, metrics


GUIDED_PREFIX = "guided_"  # models/guided_<plain configuration>: lib.train.guided's stage
# The guided arm's targets (issue 22): where a guided model's maps must point on test tumours.
GUIDED_TARGETS = {"gradcam": 0.80, "hirescam": 0.90}


def adjust_holm(pairs: list[dict[str, Any]], alpha: float) -> None:
    """Holm-adjust the p of every testable pair (one family) and mark it held when the adjusted
    p is below alpha; a pair without p (one seed) never holds."""
    testable = [p for p in pairs if p["p"] is not None]
    for pair, adjusted in zip(testable, holm([p["p"] for p in testable]), strict=True):
        pair["p_holm"] = float(adjusted)
    for pair in pairs:
        pair["holds"] = pair.get("p_holm") is not None and pair["p_holm"] < alpha


def _seed_values(stat: dict[str, Any], seeds: Sequence[int]) -> dict[int, float]:
    return dict(zip(seeds, stat.get("values", []), strict=False))


def _guided_pair(a: str, b: str, stat_a: dict[str, Any], stat_b: dict[str, Any],
                 seeds_a: Sequence[int], seeds_b: Sequence[int], label: str) -> dict[str, Any]:
    """guided - plain over the seeds both have, paired (guided seed s is fine-tuned from plain
    seed s, so seed s's two models share their start and their augmentation draws)."""
    va, vb = _seed_values(stat_a, seeds_a), _seed_values(stat_b, seeds_b)
    common = sorted(set(va) & set(vb))
    diff = paired_difference([va[s] for s in common], [vb[s] for s in common])
    return {"a": a, "b": b, "label": label, **diff}


def guidance_claims(ev: dict[str, Any], ex: dict[str, Any], alpha: float
                    ) -> tuple[list[dict[str, Any]], list[dict]]:
    """Each guided configuration against the plain one it was fine-tuned from: test macro-F1
    and each cheap method's pointing game (strict and tolerant), paired over seeds with Holm
    over the whole family; its pointing-game targets; and whether its macro-F1 is not shown
    worse than the plain model's (the difference's interval reaches zero or lies above it)."""
    ev_conf, ex_conf = ev["configurations"], ex.get("configurations", {})
    pairs, targets = [], []
    for name in sorted(ev_conf):
        base = name.removeprefix(GUIDED_PREFIX)
        if not name.startswith(GUIDED_PREFIX) or base not in ev_conf:
            continue
        seeds = (ev_conf[name]["seeds"], ev_conf[base]["seeds"])
        f1 = _guided_pair(name, base, ev_conf[name]["test_macro_f1"],
                          ev_conf[base]["test_macro_f1"], *seeds, "test macro-F1")
        pairs.append(f1)
        lo = f1["interval"][1] if f1["interval"] else None
        verdict = ("not settled (one seed: no interval)" if lo is None
                   else "met" if lo >= 0 else "missed")
        targets.append({
            "id": f"target:guided_not_worse:{name}", "kind": "target", "holds": verdict == "met",
            "winner": None, "estimate": f1["estimate"], "interval": f1["interval"],
            "target": 0.0, "verdict": verdict.split(" (")[0], "test": f1["test"],
            "statement": (f"{name}'s test macro-F1 is not worse than {base}'s: difference "
                          f"{f1['estimate']:+.3f} (95 % CI {_ci(f1['interval'])}, "
                          f"{f1['test']}); target: an interval that reaches 0 or lies above "
                          f"it, {verdict}.")})
        loc_g = ex_conf.get(name, {}).get("localisation", {})
        loc_b = ex_conf.get(base, {}).get("localisation", {})
        seeds_ex = (ex_conf.get(name, {}).get("seeds", []), ex_conf.get(base, {}).get("seeds", []))
        for method in sorted(set(loc_g) & set(loc_b)):
            for score, words in (("pointing_game", "pointing game"),
                                 ("pointing_game_tol", "tolerant pointing game")):
                if score in loc_g[method] and score in loc_b[method]:
                    pairs.append(_guided_pair(name, base, loc_g[method][score],
                                              loc_b[method][score], *seeds_ex,
                                              f"{words} ({method})"))
            if method in GUIDED_TARGETS:
                targets.append(target_claim(
                    f"target:guided_pointing_game:{name}:{method}",
                    f"{method}'s pointing game on {name} (test tumours)",
                    loc_g[method]["pointing_game"], GUIDED_TARGETS[method]))
    adjust_holm(pairs, alpha)
    claims = []
    for pair in pairs:
        claims.append(comparison_claim(pair, pair["label"], kind="guidance"))
    return claims + targets, []


def shortcut_claims(sc: dict[str, Any] | None, alpha: float = 0.05
                    ) -> tuple[list[dict[str, Any]], list[dict]]:
    """Claims from the shortcut test (lib.explain.shortcut's shortcut.json): the plain model's
    macro-F1 drop without the marker must reach its target (the shortcut is real), the guided
    model's must stay under its own; guided against plain on the clean test split, the drop and
    the maps on the marker, paired by seed with Holm over the three; and the metrics the
    cross-machine check compares."""
    if not sc:
        return [], []
    targets = sc["targets"]
    claims = [
        target_claim("target:shortcut_test:plain_drop",
                     "macro-F1 the plain model loses without the marker (marked − clean test)",
                     sc["plain"]["drop"], targets["plain_drop"]),
        target_claim("target:shortcut_test:guided_drop",
                     "macro-F1 the guided model loses without the marker (marked − clean test)",
                     sc["guided"]["drop"], targets["guided_drop"], higher_is_better=False)]
    pairs = [({"a": "guided", "b": "plain", **sc["guided_minus_plain"][key]}, label, better)
             for key, label, better in (
                 ("f1_clean", "clean-test macro-F1 in the shortcut test", True),
                 ("drop", "macro-F1 lost without the marker", False),
                 ("gradcam_on_marker", "Grad-CAM maxima on the marker", False))]
    adjust_holm([pair for pair, _, _ in pairs], alpha)
    for pair, label, better in pairs:
        claims.append(comparison_claim(pair, label, kind="shortcut", higher_is_better=better))
    metrics = [_metric(f"shortcut_test:{arm}:{key}", f"shortcut test, {arm}, {key}", sc[arm][key])
               for arm in ("plain", "guided") for key in ("f1_marked", "f1_clean", "drop")]
    return claims, metrics


def fusion_claims(fu: dict[str, Any] | None, alpha: float = 0.05
                  ) -> tuple[list[dict[str, Any]], list[dict]]:
    """Claims from the fusion stage (lib.evaluate.fusion's fusion.json): per image model, image +
    metadata against the same features without metadata (what metadata adds), against the
    image model as trained, and the new head against the trained one (the control), each in
    test macro-F1 paired by seed, Holm over all of them; every arm's macro-F1 as a metric."""
    if not fu:
        return [], []
    pairs = [{**pair, "a": f"{pair['a']}:{model}", "b": f"{pair['b']}:{model}"}
             for model, result in fu["image_models"].items() for pair in result["comparisons"]]
    adjust_holm(pairs, alpha)
    claims = []
    for pair in pairs:
        claims.append(comparison_claim(pair, "test macro-F1 in the fusion stage", kind="fusion"))
    metrics = [_metric(f"fusion:{arm}:{model}", f"fusion stage, {arm} on {model}, test macro-F1",
                       stat["macro_f1"])
               for model, result in fu["image_models"].items()
               for arm, stat in result["arms"].items()]
    metrics.append(_metric("fusion:metadata", "fusion stage, metadata alone, test macro-F1",
                           fu["metadata_only"]["macro_f1"]))
    return claims, metrics


def build(evaluate: dict[str, Any], explain: dict[str, Any],
          shortcut: dict[str, Any] | None = None,
          fusion: dict[str, Any] | None = None) -> dict[str, Any]:
    """The claims.json payload."""
    claims, metrics = classification_claims(evaluate)
    more, more_metrics = explanation_claims(explain)
    guidance, _ = guidance_claims(evaluate, explain, evaluate["alpha"])
    short, short_metrics = shortcut_claims(shortcut, evaluate["alpha"])
    fused, fused_metrics = fusion_claims(fusion, evaluate["alpha"])
    return {"level": evaluate["bootstrap"]["level"], "alpha": evaluate["alpha"],
            "seeds": {k: v["seeds"] for k, v in evaluate["configurations"].items()},
            "claims": claims + more + guidance + short + fused,
            "metrics": metrics + more_metrics + short_metrics + fused_metrics}


def headline_claims(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The claims a reader needs first: selections, comparisons that hold, then targets."""
    claims = payload["claims"]
    return ([c for c in claims if c["kind"] == "selection"]
            + [c for c in claims if c["kind"] != "selection" and c["kind"] != "target"
               and c["holds"]]
            + [c for c in claims if c["kind"] == "target"])


def status_markdown(payload: dict[str, Any]) -> str:
    """The README's status block: what holds, and how many comparisons did not."""
    claims = payload["claims"]
    shown = headline_claims(payload)
    not_shown = [c for c in claims if c["kind"] not in ("selection", "target")
                 and not c["holds"]]
    seeds = sorted({s for v in payload["seeds"].values() for s in v})
    lines = [f"Generated from `reports/metrics/claims.json` (seeds {', '.join(map(str, seeds))}; "
             f"{100 * payload['level']:.0f} % intervals include training randomness):", ""]
    lines += [f"- {c['statement']}" for c in shown]
    lines.append(f"- {len(not_shown)} other comparison(s) showed no difference (listed in the "
                 "report).")
    return "\n".join(lines)


def update_readme(readme: Path, payload: dict[str, Any]) -> bool:
    """Replace the README's block between the claims markers; True when it changed."""
    text = readme.read_text()
    pattern = re.compile(re.escape(README_START) + r".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{readme} has no {README_START} ... {README_END} block")
    new = pattern.sub(lambda _: f"{README_START}\n{status_markdown(payload)}\n{README_END}", text)
    readme.write_text(new)
    return new != text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.claims", description=__doc__.split(
        "\n")[0])
    parser.add_argument("command", choices=("build", "readme"),
                        help="build: write claims.json; readme: rewrite README's status block")
    parser.add_argument("--evaluate", type=Path, default=EVALUATE_JSON)
    parser.add_argument("--explain", type=Path, default=EXPLAIN_JSON)
    parser.add_argument("--shortcut", type=Path, default=SHORTCUT_JSON)
    parser.add_argument("--fusion", type=Path, default=FUSION_JSON)
    parser.add_argument("--out", type=Path, default=CLAIMS_JSON)
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    if args.command == "build":
        missing = [p for p in (args.evaluate, args.explain) if not p.is_file()]
        if missing:
            print(f"missing {', '.join(map(str, missing))}: run dvc repro evaluate explain",
                  file=sys.stderr)
            return 2
        optional = {}
        for name, path in (("shortcut", args.shortcut), ("fusion", args.fusion)):
            optional[name] = json.loads(path.read_text()) if path.is_file() else None
            if optional[name] is None:
                print(f"claims: no {path} (dvc repro {name}): its claims are left out",
                      file=sys.stderr)
        payload = build(json.loads(args.evaluate.read_text()),
                        json.loads(args.explain.read_text()), **optional)
        write_json(args.out, payload)
        held = sum(c["holds"] for c in payload["claims"])
        print(f"claims: {held} of {len(payload['claims'])} hold; wrote {args.out}")
        return 0
    if not args.out.is_file():
        print(f"missing {args.out}: run dvc repro claims", file=sys.stderr)
        return 2
    changed = update_readme(args.readme, json.loads(args.out.read_text()))
    print(f"{args.readme}: status block {'updated' if changed else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
