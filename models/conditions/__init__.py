"""Condition encoders of the one-step DiT generator (StrSR sec. 3.2): fixed text embedding, frozen Qwen3-VL
features of the raw LR and the trainable adaptive MLP. The on-disk feature cache that replaces the VLM during
training is read by the data pipeline (``datamodules/feature_cache.py``)."""

from models.conditions.adapter_mlp import AdaptiveMLP
from models.conditions.text import ConditionEncoder, TextEmbeddingCondition
from models.conditions.vlm import VLMCondition

__all__ = ["AdaptiveMLP", "ConditionEncoder", "TextEmbeddingCondition", "VLMCondition"]
