"""The study you can touch: a REST API and a web UI over the trained models.

    python -m lib.serve [--host 127.0.0.1] [--port 8000]      (or: make serve)

* ``registry``: which models exist (the DVC ``artifacts:`` of dvc.yaml), their test scores from
  reports/metrics/evaluate.json, and each Keras model loaded once with ``safe_mode``;
* ``inference``: an uploaded file -> checked pixels -> probabilities and a saliency map, through
  the same decode as training (``lib.data.inputs.decode_to_model``) and the same explainers as the
  explain stage (``lib.explain.methods.Explainer``);
* ``feedback``: the label and lesion mask a user gives, stored in the raw layout so ``prepare``
  can read it; never overwrites, never writes into data/raw;
* ``api``: the FastAPI app (``/health``, ``/models``, ``/predict``, ``/feedback``, ``/docs``);
* ``ui``: the Gradio interface mounted at ``/ui`` of the same app.
"""
