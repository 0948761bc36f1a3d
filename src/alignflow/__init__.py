"""alignflow: safety-align a language model and prove what it shipped."""

import os

# Keras runs on JAX in this project; set before anything imports keras.
os.environ.setdefault("KERAS_BACKEND", "jax")
# Nothing in alignflow may reach a model hub at run time unless the user asks for a hub preset.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
