"""Test-wide settings: tiny models on a small CPU box run fastest on one thread (thread start-up dominates)."""

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)
