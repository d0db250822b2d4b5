"""Grad-CAM budgets: the batched maps of lib.explain against the keras-io one-image recipe.

Measured on the default test split (data/processed/manifest.csv and data/raw must exist, as after
`make repro`) with one trained model (default: the scratch batchnorm model, else the first found):

- batched Grad-CAM (lib.explain.methods.Explainer: tf-keras-vis Gradcam on the logits twin, 64
images per
  call) over the whole test split, cold (first call, including the model clone and the tracing)
  and warm; budget <= 30 s on 2 cores;
- the keras-io example's ``make_gradcam_heatmap`` (https://keras.io/examples/vision/grad_cam/):
  a sub-model to [target layer output, predictions] and a GradientTape per image, run one image at
  a time on the same model, layer and class (the predicted one), on `--recipe-images` images; once
  verbatim (the sub-model is built inside the function, as in the example) and once with the
  sub-model built once. Budget: batched >= 5x faster per image than the verbatim recipe;
- agreement: Pearson r between each recipe heatmap (upsampled and scaled exactly like ours) and
  our map of the same image; budget r >= 0.99.

Prints every figure with its budget; exit status 1 when one is missed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BUDGET_SECONDS = 30.0
BUDGET_SPEEDUP = 5.0
BUDGET_PEARSON = 0.99


def make_gradcam_heatmap(img_array, model, last_conv_layer_name, pred_index=None):
    """The keras-io example's function, verbatim apart from names of the imports."""
    import keras
    import tensorflow as tf

    grad_model = keras.models.Model(
        model.inputs, [model.get_layer(last_conv_layer_name).output, model.output]
    )
    with tf.GradientTape() as tape:
        last_conv_layer_output, preds = grad_model(img_array)
        if pred_index is None:
            pred_index = tf.argmax(preds[0])
        class_channel = preds[:, pred_index]
    grads = tape.gradient(class_channel, last_conv_layer_output)
    pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
    last_conv_layer_output = last_conv_layer_output[0]
    heatmap = last_conv_layer_output @ pooled_grads[..., tf.newaxis]
    heatmap = tf.squeeze(heatmap)
    heatmap = tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap)
    return heatmap.numpy()


def heatmap_prebuilt(grad_model, img_array, pred_index):
    """The same recipe with the sub-model built once outside (the fairer per-image baseline)."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        last_conv_layer_output, preds = grad_model(img_array)
        class_channel = preds[:, pred_index]
    grads = tape.gradient(class_channel, last_conv_layer_output)
    pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
    heatmap = tf.squeeze(last_conv_layer_output[0] @ pooled_grads[..., tf.newaxis])
    return (tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap)).numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a .keras file (default: "
                        "models/scratch_batchnorm/seed42.keras, else the first model found)")
    parser.add_argument("--recipe-images", type=int, default=100,
                        help="test images the one-at-a-time recipe runs on")
    args = parser.parse_args()

    import warnings

    import keras
    import numpy as np

    from lib.config import load_params
    from lib.data.inputs import load_arrays
    from lib.data.manifest import class_names, load_manifest, split_frame
    from lib.evaluate import predict
    from lib.explain.methods import Explainer, logits_twin, normalise, predict_probs, upsample
    from lib.seeding import seed_everything

    # the recipe passes model.inputs (a list) to a one-input model, as the example does
    warnings.filterwarnings("ignore", message="The structure of `inputs`")
    params = load_params(REPO / "params.yaml")
    manifest_path = REPO / params["data"]["processed_dir"] / "manifest.csv"
    raw_dir = REPO / params["data"]["raw_dir"]
    if not manifest_path.is_file():
        print(f"no {manifest_path}: run `make repro` (or `dvc repro prepare`) first",
              file=sys.stderr)
        return 2
    path = (args.model or REPO / "models" / "scratch_batchnorm" / "seed42.keras").resolve()
    if not path.is_file():
        path = predict.find_models(REPO / "models")[0].path
    seed_everything(0)
    model = keras.saving.load_model(path, compile=False)
    size, channels = predict.input_spec(model)
    manifest = load_manifest(manifest_path)
    test = split_frame(manifest, "test")
    x, _ = load_arrays(test, raw_dir, image_size=size, n_classes=len(class_names(manifest)),
                       channels=channels)
    targets = predict_probs(model, x).argmax(axis=1)

    start = time.perf_counter()
    explainer = Explainer(model)
    ours = explainer.maps(x, targets, "gradcam")
    cold = time.perf_counter() - start
    start = time.perf_counter()
    explainer.maps(x, targets, "gradcam")
    warm = time.perf_counter() - start
    layer = explainer.layer

    # keras-io prepares the model by removing the softmax: gradients of the logit, as ours.
    linear = logits_twin(model)
    n = min(args.recipe_images, len(x))
    start = time.perf_counter()
    recipe = [make_gradcam_heatmap(x[i:i + 1], linear, layer, int(targets[i])) for i in range(n)]
    per_image_recipe = (time.perf_counter() - start) / n
    grad_model = keras.models.Model(linear.inputs, [linear.get_layer(layer).output,
                                                    linear.output])
    start = time.perf_counter()
    for i in range(n):
        heatmap_prebuilt(grad_model, x[i:i + 1], int(targets[i]))
    per_image_prebuilt = (time.perf_counter() - start) / n

    theirs = normalise(upsample(np.nan_to_num(np.stack(recipe)), (size, size)))
    r = np.array([np.corrcoef(a.ravel(), b.ravel())[0, 1] if a.std() > 0 and b.std() > 0
                  else float(np.allclose(a, b)) for a, b in zip(theirs, ours[:n], strict=True)])
    per_image_ours = warm / len(x)
    speedup = per_image_recipe / per_image_ours

    print(f"Grad-CAM on the test split: {len(x)} images at {size} px, "
          f"{path.parent.name}/{path.name}, layer {layer}, predicted class")
    print(f"  batched (lib.explain, 64 per call): {cold:6.2f} s cold, {warm:6.2f} s warm "
          f"({1000 * per_image_ours:.2f} ms/image)   budget <= {BUDGET_SECONDS:.0f} s: "
          f"ratio {cold / BUDGET_SECONDS:.2f}")
    print(f"  keras-io recipe, one image at a time:  {1000 * per_image_recipe:7.2f} ms/image "
          f"(sub-model built per call, as in the example; {n} images)")
    print(f"  keras-io recipe, sub-model built once: {1000 * per_image_prebuilt:7.2f} ms/image")
    print(f"  speed-up per image: {speedup:.1f}x vs the recipe (budget >= {BUDGET_SPEEDUP:.0f}x), "
          f"{per_image_prebuilt / per_image_ours:.1f}x vs the recipe with the sub-model built once")
    print(f"  agreement with the recipe: Pearson r median {np.median(r):.5f}, minimum "
          f"{r.min():.5f} over {n} images (budget >= {BUDGET_PEARSON})")
    ok = cold <= BUDGET_SECONDS and speedup >= BUDGET_SPEEDUP and r.min() >= BUDGET_PEARSON
    print(f"\nbudgets {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
