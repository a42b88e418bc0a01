"""Library messages that say nothing to a user of this project, silenced by message and origin.

Each filter names the message it drops and the library it comes from, so every warning of ours (and any other
library message) still shows. :func:`quiet_libraries` is called once by the command line before anything is built.
"""

from __future__ import annotations

import logging
import re
import warnings

__all__ = ["LOG_FILTERS", "WARNING_FILTERS", "quiet_libraries"]

#: (message regex, module regex) of ``warnings.warn`` calls to drop.
WARNING_FILTERS: tuple[tuple[str, str], ...] = (
    # the frozen backbones stay in eval mode on purpose (DESIGN.md, "Conventions")
    (r"Found \d+ module\(s\) in eval mode", r"lightning\."),
    # a code sample about saving pre-optimization weights; our checkpoints are taken after the step, as intended
    (r"Using ModelCheckpoint with manual optimization", r"lightning\."),
    # torch deprecation inside Lightning's own pytree helper
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\."),
    # the demo and tests load data in the main process (num_workers: 0) on purpose
    (r"The '\w+_dataloader' does not have many workers", r"lightning\."),
)

#: logger name -> message regexes of log records to drop.
LOG_FILTERS: dict[str, tuple[str, ...]] = {
    # an advertisement for another product, and accelerators this project never uses
    "lightning.pytorch.utilities.rank_zero": (r"Tip: For seamless cloud", r"^TPU available", r"^HPU available",
                                               # our own compact summary replaces Lightning's table on purpose
                                               r"^Trainer already configured with model summary callbacks"),
    # our generators cast frozen bases to their dtype with .to() on purpose; the list of fp32 modules is empty
    "diffusers.models.modeling_utils": (r"should be kept in float32",),
}


class _DropMessages(logging.Filter):
    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.search(message) for p in self.patterns)


_installed = False


def quiet_libraries() -> None:
    """Install the filters of :data:`WARNING_FILTERS` and :data:`LOG_FILTERS` (once per process)."""
    global _installed
    for message, module in WARNING_FILTERS:
        warnings.filterwarnings("ignore", message=f".*{message}", module=module)
    if _installed:
        return
    for name, patterns in LOG_FILTERS.items():
        logging.getLogger(name).addFilter(_DropMessages(patterns))
    _installed = True
