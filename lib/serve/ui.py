"""The Gradio interface of the app, mounted at /ui (placeholder until the full UI lands)."""

from __future__ import annotations

import os
from typing import Any

from .service import Service

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no request may leave localhost


def build_ui(service: Service) -> Any:
    """A gr.Blocks over the service."""
    import gradio as gr

    with gr.Blocks(title="Brain MRI study") as demo:
        gr.Markdown(f"Models: {', '.join(service.registry.loaded)}")
    return demo
