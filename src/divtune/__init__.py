"""divtune: post-train language models for creative text that is good and diverse."""

__version__ = "0.1.0"
