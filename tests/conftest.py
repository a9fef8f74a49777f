"""Test-wide settings: nothing may reach a model hub, so every model loads offline."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
