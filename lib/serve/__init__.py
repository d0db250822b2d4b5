"""The study you can touch: a REST API and a web UI over the trained models.

    python -m lib.serve [--host 127.0.0.1] [--port 8000]      (or: make serve)

* ``registry``: which models exist (the DVC ``artifacts:`` of dvc.yaml), their test scores from
  reports/metrics/evaluate.json, and each Keras model loaded once with ``safe_mode``;
* ``study``: what the study says about them: the best model by ``BEST_MODEL_RULE`` (validation
  macro-F1 over seeds), the headline saliency method of explain.json (the UI's default), the
  training data and what the models are not for (the model card);
* ``ood``: is an upload like the training images? a k-NN distance in the model's features with
  a threshold set on the validation split, prepared once per model at start;
* ``inference``: an uploaded file -> checked pixels -> probabilities and a saliency map, through
  the same decode as training (``lib.data.inputs.decode_to_model``) and the same explainers as the
  explain stage (``lib.explain.methods.Explainer``);
* ``feedback``: the label and lesion mask a user gives, stored in the raw layout so ``prepare``
  can read it; never overwrites, never writes into data/raw;
* ``api``: the FastAPI app (``/health``, ``/models``, ``/model-card``, ``/predict``,
  ``/feedback``, ``/docs``; ``apidocs`` serves Swagger UI from local files);
* ``ui``: the Gradio interface mounted at ``/ui`` of the same app.
"""
