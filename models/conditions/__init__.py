"""Condition encoders of the one-step DiT generator (StrSR sec. 3.2): fixed text embedding, frozen Qwen3-VL
features of the raw LR, the trainable adaptive MLP and an on-disk feature cache."""

from models.conditions.adapter_mlp import AdaptiveMLP
from models.conditions.cache import FeatureCache, bicubic_lr
from models.conditions.text import ConditionEncoder, TextEmbeddingCondition
from models.conditions.vlm import VLMCondition

__all__ = ["AdaptiveMLP", "ConditionEncoder", "FeatureCache", "TextEmbeddingCondition", "VLMCondition", "bicubic_lr"]
