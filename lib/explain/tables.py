"""The explain notebook's tables, from the study's results (rows: model, method)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..contracts import SCORES
from .study import ModelExplanation


def tables(results: dict[str, ModelExplanation], validation: dict[str, Any] | None = None
           ) -> dict[str, pd.DataFrame]:
    """Overview, localisation, faithfulness, sanity and shortcut tables (rows: model, method),
    and the validation scores that chose the headline method (rows: method)."""
    headline = (validation or {}).get("headline_method", "gradcam")
    overview, loc, faith, sanity, shortcut = [], [], [], [], []
    for key, r in results.items():
        m = r.metrics
        pg = {method: m["localisation"].get(method, {}).get("pointing_game", {}).get("value")
              for method in dict.fromkeys((headline, "gradcam"))}
        overview.append({"model": key, "test accuracy": r.accuracy, "layer": r.layer,
                         "grid": "x".join(map(str, m["layer_grid"])),
                         **{f"{method} pointing game" + (" (headline)" if method == headline
                                                         else ""): v for method, v in pg.items()},
                         "shortcut rate": m["shortcut"].get("rate"),
                         "seconds": round(r.seconds, 1)})
        for method, s in m["localisation"].items():
            if method != "skipped":
                loc.append({"model": key, "method": method, "n": s["n"],
                            **{k: f"{s[k]['value']:.3f} [{s[k]['ci'][0]:.3f}, "
                                  f"{s[k]['ci'][1]:.3f}]" for k in SCORES}})
        faith += [{"model": key, "method": k, **v} for k, v in m["faithfulness"].items()]
        sanity += [{"model": key, "method": k, **v} for k, v in m["sanity"].items()]
        shortcut.append({"model": key, **{k: v for k, v in m["shortcut"].items()
                                          if k != "per_class"},
                         **m["shortcut"].get("per_class", {})})
    index = ["model", "method"]
    scores = (validation or {}).get("scores", {})
    chosen = pd.DataFrame([{"method": k, **v, "headline": k == headline}
                           for k, v in scores.items()],
                          columns=["method", *SCORES[:2], "n", "sanity_spearman",
                                   "sanity_passed", "headline"]).set_index("method")
    return {"overview": pd.DataFrame(overview).set_index("model"), "validation": chosen,
            "localisation": pd.DataFrame(loc).set_index(index) if loc else pd.DataFrame(),
            "faithfulness": pd.DataFrame(faith).set_index(index),
            "sanity": pd.DataFrame(sanity).set_index(index),
            "shortcut": pd.DataFrame(shortcut).set_index("model")}


def seed_table(summary: dict[str, Any]) -> pd.DataFrame:
    """explain.json's configurations over seeds: per configuration, each cheap method's strict
    pointing game and the shortcut rate as 'mean ± sd [t-interval]' (rows: configuration)."""
    def cell(stat: dict[str, Any]) -> str:
        sd = f" ± {stat['sd']:.3f}" if stat.get("sd") is not None else ""
        ci = stat.get("interval")
        return f"{stat['mean']:.3f}{sd}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    rows = []
    for name, c in summary.get("configurations", {}).items():
        row: dict[str, Any] = {"configuration": name, "seeds": ", ".join(map(str, c["seeds"]))}
        for method, scores in c.get("localisation", {}).items():
            row[f"{method} pointing game"] = cell(scores["pointing_game"])
        if "rate" in c.get("shortcut", {}):
            row["shortcut rate"] = cell(c["shortcut"]["rate"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("configuration") if rows else pd.DataFrame()
