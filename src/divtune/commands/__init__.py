"""One module per CLI stage; each exposes ``register(app)``."""
