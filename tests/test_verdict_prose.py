"""The explain stage's generated prose states facts about the model it explains.

Each sentence template is checked against a model (or a verdict) where it would be false: the
max-pooling explanation must not appear for an average-pooled head, "relies on the lesion" must
not appear when the healthy-twin control says otherwise, and a sanity verdict near its cut says
that it is not settled.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lib.explain import scores, verdict
from lib.explain.methods import head_facts


def tiny(head: str, extra_conv: bool = False):
    import keras

    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="first")(inputs)
    if extra_conv:
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="second")(x)
    pool = {"average": keras.layers.GlobalAveragePooling2D(),
            "max": keras.layers.GlobalMaxPooling2D(), "flatten": keras.layers.Flatten()}[head]
    outputs = keras.layers.Dense(4, activation="softmax")(pool(x))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("head", ["average", "max", "flatten"])
def test_head_facts_name_the_pooling_and_whether_the_head_reads_the_layer(head: str) -> None:
    facts = head_facts(tiny(head), "first")
    assert facts == {"pooling": head, "reads_layer": True, "layers_between": 0}


def test_head_facts_see_layers_between_the_explained_layer_and_the_head() -> None:
    model = tiny("average", extra_conv=True)
    assert head_facts(model, "first") == {"pooling": "average", "reads_layer": False,
                                          "layers_between": 1}
    assert head_facts(model, "second")["reads_layer"]


def test_max_pooling_is_blamed_only_behind_a_max_pooling_head() -> None:
    for head in ("average", "flatten"):
        facts = head_facts(tiny(head, extra_conv=True), "first")
        assert "max-pooling" not in verdict.gradcam_reason(facts, "first"), head
    assert "max-pooling" in verdict.gradcam_reason(head_facts(tiny("max"), "first"), "first")


def test_average_pooling_reason_names_the_layers_between_and_claims_nothing_when_direct() -> None:
    model = tiny("average", extra_conv=True)
    reason = verdict.gradcam_reason(head_facts(model, "first"), "first")
    assert "first lies 1 layers before the head's global average pooling" in reason
    # read directly by an average-pooled head, Grad-CAM equals HiResCAM: no reason to give
    assert verdict.gradcam_reason(head_facts(model, "second"), "second") == ""


def test_no_method_reason_follows_the_twin_control() -> None:
    relies = verdict.no_method_reason({"rate": 0.03, "healthy_rate": 0.02, "excess": 0.01})
    assert "relies on the lesion" in relies and "besides" not in relies
    shortcut = verdict.no_method_reason({"rate": 0.4, "healthy_rate": 0.02, "excess": 0.38})
    assert "something besides the lesion" in shortcut and "relies on" not in shortcut
    unknown = verdict.no_method_reason({"skipped": "no twins"})
    assert "not known" in unknown
    for sentence in (relies, shortcut, unknown):
        assert "has not learnt" not in sentence


def explained(pg: dict[str, float], head: dict, shortcut: dict) -> SimpleNamespace:
    loc = {m: {"pointing_game": {"value": v}} for m, v in pg.items()}
    return SimpleNamespace(key="m_s0", layer="first", size=64, accuracy=0.9, metrics={
        "localisation": loc, "layer_grid": [32, 32], "head": head, "shortcut": shortcut,
        "sanity": {m: {"passed": True} for m in pg}})


def test_pointing_check_note_uses_the_model_facts() -> None:
    avg = {"pooling": "average", "reads_layer": False, "layers_between": 3}
    twins = {"rate": 0.03, "healthy_rate": 0.02, "excess": 0.01}
    note = verdict._pointing_check(explained({"gradcam": 0.3, "hirescam": 0.85}, avg, twins),
                                   "gradcam", 0.6)["note"]
    assert "hirescam reaches 85%" in note and "3 layers before" in note
    assert "max-pooling" not in note
    note = verdict._pointing_check(explained({"gradcam": 0.3, "hirescam": 0.5}, avg, twins),
                                   "gradcam", 0.6)["note"]
    assert "relies on the lesion" in note


def test_sanity_is_settled_only_when_its_interval_clears_the_cut() -> None:
    rng = np.random.default_rng(0)
    trained = rng.random((12, 8, 8))
    same = scores.sanity(trained, trained)  # identical maps: rho 1 on every image
    assert same["spearman"] == pytest.approx(1.0) and not same["passed"] and same["settled"]
    unrelated = scores.sanity(trained, rng.random((12, 8, 8)))
    assert unrelated["passed"] and unrelated["settled"]
    # half the images keep their map, half get an unrelated one: mean near 0.5, wide interval
    mixed = np.concatenate([trained[:6], rng.random((6, 8, 8))])
    near = scores.sanity(trained, mixed)
    low, high = near["ci"]
    assert low < scores.SANITY_MAX_SPEARMAN <= high and not near["settled"]
    assert "not settled" in verdict.sanity_words(near)
    assert "not settled" not in verdict.sanity_words(same)
