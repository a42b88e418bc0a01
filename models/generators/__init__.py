"""One-step SR generators (plain torch). See docs/DESIGN.md, "Generators"."""

from models.generators.prompt import compute_prompt_embedding, empty_prompt_ids
from models.generators.sd_onestep import SD_UNET_LORA_TARGETS, OneStepSDGenerator, load_scheduler

__all__ = [
    "OneStepSDGenerator",
    "SD_UNET_LORA_TARGETS",
    "compute_prompt_embedding",
    "empty_prompt_ids",
    "load_scheduler",
]
