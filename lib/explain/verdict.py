"""What the explain stage concludes: the targets, each met or missed with its number and why,
and explain.json's payload."""

from __future__ import annotations

from typing import Any

from ..evaluate.metrics import parse_key
from ..jsonio import STAGE_DIGITS, round_floats
from ..stats import CI_LEVEL, holm, paired_difference, seed_interval
from . import scores as localise
from .study import (
    NO_VALIDATION_RULE,
    ExplainConfig,
    ModelExplanation,
    SplitImages,
    fallback_headline,
)

TARGET_POINTING_GAME = 0.8  # the headline method's strict pointing game on test


TARGET_GRADCAM_POINTING_GAME = 0.6  # Grad-CAM's own, whichever method heads the report


TARGET_SHORTCUT_RATE = 0.1


EXCESS_MARGIN = 0.05  # twins called a tumour this much more often than healthy scans: a shortcut


def _pointing(best: ModelExplanation, method: str) -> tuple[float | None, str | None]:
    """(strict pointing game on test, None) or (None, why it was not measured)."""
    loc = best.metrics["localisation"]
    if "skipped" in loc:
        return None, loc["skipped"] or "localisation was skipped"
    if method not in loc:
        return None, f"{method} is not among the methods"
    return float(loc[method]["pointing_game"]["value"]), None


def gradcam_reason(head: dict[str, Any], layer: str) -> str:
    """Why Grad-CAM misses where another method hits, from how the head reads `layer`
    (methods.head_facts); empty when the facts give no reason (then none is claimed)."""
    pooling = head.get("pooling")
    if pooling == "max":
        return ("; behind a global max-pooling head the score's gradient reaches each channel "
                "only at its maximum, and Grad-CAM averages it over the whole grid")
    if pooling == "flatten":
        return ("; a flattening head gives every cell its own weight, and Grad-CAM averages "
                "those into one weight per channel")
    if pooling == "average" and not head.get("reads_layer", True):
        return (f"; {layer} lies {head.get('layers_between', 0)} layers before the head's "
                "global average pooling, so its gradients differ from cell to cell; Grad-CAM "
                "averages them into one weight per channel and lights up wherever a channel "
                "is active, where HiResCAM keeps each cell's own gradient")
    return ""


def no_method_reason(shortcut: dict[str, Any]) -> str:
    """Why no method reaches the target, from the healthy-twin control's verdict."""
    rate, excess = shortcut.get("rate"), shortcut.get("excess")
    if rate is None or excess is None:
        return ("no method that passes the sanity check reaches it, and without the healthy-twin "
                "control it is not known whether the model relies on the lesion")
    if excess <= EXCESS_MARGIN:
        return ("no method that passes the sanity check reaches it, although the healthy-twin "
                f"control says the model relies on the lesion ({rate:.0%} of twins called a "
                f"tumour, {100 * excess:.0f} points above real healthy scans): the maps are too "
                "coarse or too diffuse to put their maximum inside small lesions")
    return ("no method that passes the sanity check reaches it, and the healthy-twin control "
            f"says the model reads something besides the lesion (twins called a tumour "
            f"{100 * excess:.0f} points more often than real healthy scans)")


def _pointing_check(best: ModelExplanation, method: str, target: float) -> dict[str, Any]:
    pg, why = _pointing(best, method)
    check: dict[str, Any] = {"method": method, "target": target, "measured": pg,
                             "met": pg is not None and pg >= target}
    if pg is None:
        check["note"] = f"{method}'s pointing game was not measured ({why})"
    elif not check["met"]:
        h, w = best.metrics["layer_grid"]
        sanity = best.metrics.get("sanity", {})  # a method that ignores the model proves nothing
        others = {m: v["pointing_game"]["value"] for m, v in best.metrics["localisation"].items()
                  if m != method and isinstance(v, dict) and "pointing_game" in v
                  and sanity.get(m, {}).get("passed", True)}
        leader = max(others, key=others.get) if others else None
        if leader is not None and others[leader] >= target:
            # the model does point at the lesion: the method, not the model, misses
            why = (f"{leader} reaches {others[leader]:.0%} on the same model, so the lesion "
                   f"drives the model and {method} misses it")
            if method == "gradcam":
                why += gradcam_reason(best.metrics.get("head", {}), best.layer)
        else:
            why = no_method_reason(best.metrics.get("shortcut", {}))
        check["note"] = (
            f"{method}'s maximum falls inside the lesion on {pg:.0%} of tumour test images "
            f"(target {target:.0%}); {best.key}, which stands for the best configuration "
            f"(chosen on validation), is explained at {best.layer}, a grid of {h}x{w} cells of "
            f"{best.size // max(h, 1)} pixels; {why}")
    return check


def _shortcut_checks(shortcut: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    rate, healthy = shortcut.get("rate"), shortcut.get("healthy_rate")
    excess = shortcut.get("excess")
    twins: dict[str, Any] = {"target": TARGET_SHORTCUT_RATE, "measured": rate,
                             "met": rate is not None and rate <= TARGET_SHORTCUT_RATE}
    over: dict[str, Any] = {"target": EXCESS_MARGIN, "measured": excess,
                            "met": excess is not None and excess <= EXCESS_MARGIN}
    if rate is None:
        twins["note"] = over["note"] = (f"the shortcut control was skipped "
                                        f"({shortcut.get('skipped', 'no healthy twins')})")
        return twins, over
    if not twins["met"]:
        twins["note"] = (f"{rate:.0%} of healthy twins are still called a tumour (target <= "
                         f"{TARGET_SHORTCUT_RATE:.0%})")
        if healthy is not None and rate - healthy <= EXCESS_MARGIN:
            twins["note"] += (f", about as many as real healthy test scans ({healthy:.0%}): the "
                              "model rarely recognises a healthy brain, rather than reading a "
                              "shortcut")
    if excess is None:
        over["note"] = "no real healthy test scans to compare the twins with"
    elif not over["met"]:
        over["note"] = (f"twins are called a tumour {100 * excess:.0f} percentage points more "
                        f"often than real healthy test scans ({healthy:.0%}; target <= "
                        f"{100 * EXCESS_MARGIN:.0f}): the model reads something other than the "
                        "lesion (a shortcut)")
    return twins, over


def _sanity_check(sanity: dict[str, Any]) -> dict[str, Any]:
    failed = [m for m, v in sanity.items() if not v["passed"]]
    unsettled = [m for m, v in sanity.items() if not v.get("settled", True)]
    check: dict[str, Any] = {"target": localise.SANITY_MAX_SPEARMAN,
                             "measured": {m: v["spearman"] for m, v in sanity.items()},
                             "failed": failed, "unsettled": unsettled,
                             "met": bool(sanity) and not failed}
    if failed:
        rho = ", ".join(f"{m} ({sanity_words(sanity[m])})" for m in failed)
        check["note"] = (f"the randomisation sanity check failed for {rho}: their maps barely "
                         "change when the top layers are scrambled")
    elif not sanity:
        check["note"] = "no sanity check was run"
    return check


def sanity_words(result: dict[str, Any]) -> str:
    """One method's sanity verdict with how sure it is: rho, its interval over the images, and
    'not settled' when that interval spans the cut (the verdict could flip on other images)."""
    words = f"rho {result['spearman']:.2f}"
    if "ci" in result:
        low, high = result["ci"]
        words += f", {100 * CI_LEVEL:.0f} % CI {low:.2f}-{high:.2f} over {result['n']} images"
        if not result.get("settled", True):
            words += (f"; not settled: the interval spans the cut "
                      f"{localise.SANITY_MAX_SPEARMAN:g}")
    return words


def target_check(best: ModelExplanation, headline: str = "gradcam") -> dict[str, Any]:
    """The study's targets for the best model, each met or missed, with the numbers and why.

    `checks`: the headline method's strict pointing game on test (>= TARGET_POINTING_GAME),
    Grad-CAM's (>= TARGET_GRADCAM_POINTING_GAME), the shortcut rate (<= TARGET_SHORTCUT_RATE),
    its excess over real healthy scans (<= EXCESS_MARGIN) and every method's sanity check;
    `met` when all are.
    """
    twins, over = _shortcut_checks(best.metrics["shortcut"])
    checks = {
        "headline_pointing_game": _pointing_check(best, headline, TARGET_POINTING_GAME),
        "gradcam_pointing_game": _pointing_check(best, "gradcam", TARGET_GRADCAM_POINTING_GAME),
        "shortcut_rate": twins, "shortcut_excess": over,
        "sanity": _sanity_check(best.metrics.get("sanity", {})),
    }
    for check in checks.values():
        check["met"] = bool(check["met"])
    notes = [c["note"] for c in checks.values() if not c["met"] and c.get("note")]
    return {"method": headline, "pointing_game": TARGET_POINTING_GAME,
            "gradcam_pointing_game": TARGET_GRADCAM_POINTING_GAME,
            "shortcut_rate": TARGET_SHORTCUT_RATE, "shortcut_excess": EXCESS_MARGIN,
            "best_pointing_game": checks["headline_pointing_game"]["measured"],
            "best_shortcut_rate": twins["measured"], "checks": checks,
            "met": all(c["met"] for c in checks.values()),
            "note": "; ".join(notes) if notes else "met"}


def _configurations(per_seed: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{configuration: {model key: its per-seed part}}, seeds in order."""
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for key in sorted(per_seed, key=lambda k: parse_key(k)):
        groups.setdefault(parse_key(key)[0], {})[key] = per_seed[key]
    return groups


def seed_summary(per_seed: dict[str, dict[str, Any]], level: float = CI_LEVEL
                 ) -> dict[str, Any]:
    """Per configuration, over its seeds (mean, sd, t-interval, values): each cheap method's
    strict and tolerant pointing game on every tumour test image, and the shortcut control's
    rate and excess. Seeds are the replicates, as for the classification metrics."""
    out = {}
    for name, runs in _configurations(per_seed).items():
        parts = list(runs.values())
        entry: dict[str, Any] = {"seeds": [parse_key(k)[1] for k in runs],
                                 "accuracy": seed_interval([r["accuracy"] for r in parts], level)}
        loc = [r["localisation"] for r in parts]
        if all("skipped" not in x for x in loc):
            entry["localisation"] = {
                method: {score: {**seed_interval([x[method][score]["value"] for x in loc], level),
                                 "values": [x[method][score]["value"] for x in loc]}
                         for score in ("pointing_game", "pointing_game_tol")}
                for method in loc[0]}
        shortcut = [r["shortcut"] for r in parts]
        if all("rate" in x for x in shortcut):
            entry["shortcut"] = {k: {**seed_interval([x[k] for x in shortcut], level),
                                     "values": [x[k] for x in shortcut]}
                                 for k in ("rate", "excess") if all(k in x for x in shortcut)}
        out[name] = entry
    return out


def method_comparisons(configurations: dict[str, Any], name: str, headline: str,
                       level: float = CI_LEVEL) -> list[dict[str, Any]]:
    """On configuration `name`: the headline method's strict pointing game against each other
    cheap method, paired over seeds (the same models explained two ways), Holm over those pairs.
    `holds`: the adjusted p is below 1 - level, so the interval excludes zero, either way (the
    estimate's sign says which method points better)."""
    loc = configurations.get(name, {}).get("localisation", {})
    if headline not in loc:
        return []
    own = loc[headline]["pointing_game"]["values"]
    out = []
    for method, scores in loc.items():
        if method != headline:
            out.append({"configuration": name, "a": headline, "b": method,
                        "metric": "pointing_game",
                        **paired_difference(own, scores["pointing_game"]["values"], level)})
    testable = [c for c in out if c["p"] is not None]
    for c, adjusted in zip(testable, holm([c["p"] for c in testable]), strict=True):
        c["p_holm"] = float(adjusted)
    for c in out:
        c.setdefault("p_holm", None)
        c["holds"] = bool(c["p_holm"] is not None and c["p_holm"] < 1 - level)
    return out


def pointing_tolerance(test: SplitImages) -> dict[str, Any]:
    """The tolerant pointing game's tolerance, as the report states it."""
    sides = sorted({max(test.masks[i].shape) for i in test.tumour})
    return {"fraction_of_side": localise.TOLERANCE_FRACTION, "image_sides": sides,
            "pixels": [localise.tolerance_px((side, side)) for side in sides],
            "reference": "Zhang et al. 2016: 15 px on 224 px inputs, scaled to the image side"}


def summary(results: dict[str, ModelExplanation], test: SplitImages, cfg: ExplainConfig,
            skipped: dict[str, str], twins_reason: str | None = None,
            validation: dict[str, Any] | None = None,
            per_seed: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The explain.json payload, floats rounded by lib.jsonio's rule (its write_json sorts keys).

    `validation`: what ``validate`` returned (the best model and the headline method, both
    chosen on validation); without it the headline method is the cheapest configured one, the
    best model the first key, and the json says the validation pass was skipped. `per_seed`:
    ``explain_all``'s part of every model, summarised per configuration over seeds.
    """
    per_seed = per_seed or {}
    validation = validation or {"skipped": "no validation pass was run",
                                "headline_method": fallback_headline(cfg.methods)}
    best = validation.get("best_model") or min(results)
    headline = validation["headline_method"]
    skipped = {**test.skipped, **skipped}
    if twins_reason:
        skipped["shortcut"] = twins_reason
    if "skipped" in validation:
        skipped["validation"] = validation["skipped"]
    payload = {
        "methods": list(cfg.methods), "method": cfg.gallery_method, "layer": cfg.layer,
        "min_grid": cfg.min_grid, "class_index": cfg.class_index,
        "sample_size": len(test.sample), "sanity_size": min(cfg.sanity_size, len(test.sample)),
        "n_tumour_images": len(test.tumour),
        "pointing_tolerance": pointing_tolerance(test) if len(test.tumour) else None,
        "models": {k: r.metrics for k, r in results.items()},
        "best_model": best,
        "best_model_rule": validation.get("best_model_rule", NO_VALIDATION_RULE),
        "headline_method": headline,
        "validation": validation,
        "target": target_check(results[best], headline),
        "skipped": skipped,
        "seeds": per_seed,
    }
    configurations = seed_summary(per_seed) if per_seed else {}
    best_name = parse_key(best)[0] if per_seed else None
    payload["configurations"] = configurations
    payload["best_configuration"] = best_name
    payload["method_comparisons"] = (method_comparisons(configurations, best_name, headline)
                                     if best_name else [])
    return round_floats(payload, STAGE_DIGITS["explain"])
