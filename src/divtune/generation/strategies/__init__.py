"""Inference-time diversity strategies of ``divtune generate`` beside the default
``independent`` sampling: ``iterative`` (each sample sees the earlier ones) and
``verbalized`` (one call asks for several responses with their probabilities)."""
