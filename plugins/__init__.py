"""Trainer plugins: what Lightning's ``Trainer(strategy=..., plugins=...)`` takes, not callbacks.

- :mod:`plugins.fsdp`: ``LoRAFSDPStrategy`` (``trainer.strategy``), FSDP for frozen-base + LoRA modules;
- :mod:`plugins.checkpoint_io`: ``AtomicCheckpointIO`` (``trainer.plugins``), crash-safe checkpoint files.

Import them from their modules (``plugins.fsdp`` ...).
"""
