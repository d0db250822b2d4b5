"""Explanations: saliency methods, their scores against the masks, and the explain stage."""
