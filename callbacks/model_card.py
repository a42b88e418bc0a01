"""The model card written beside every exported adapter (``export/README.md``, the Hugging Face card name).

The text comes from ``callbacks/model_card_template.md`` (``{name}`` fields), filled from the run: the resolved config
the command line saved in the run folder (base model, data, degradation, recipe), the trainer (steps, the last
validation scores) and the exported files (size, SHA-256).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import yaml

from callbacks.outputs import run_folder
from models.pretrained import looks_like_hub_id

__all__ = ["TEMPLATE", "card_fields", "render_card"]

TEMPLATE = Path(__file__).with_name("model_card_template.md")
_FALLBACK = "# {title}\n\n| | |\n| --- | --- |\n| method | {method} |\n| base model | {base_model} |\n" \
            "| steps | {steps} |\n| training data | {data} |\n\n## Files\n\n{files}\n\n## Metrics\n\n{metrics}\n"

_METHODS = {  # module class -> what to call the method on the card
    "Stage1Module": "TUDSR stage 1 (one-step SD generator + LoRA vs. a DINOv3 multi-level discriminator)",
    "Stage2Module": "TUDSR stage 2 (second adapter, chunked training at N x R)",
    "DiTDistillModule": "StrSR (one-step DiT + LoRA with a VLM condition vs. a CLIP-ConvNeXt discriminator)",
}


def _sources(node: Any) -> list[str]:
    """The ``pretrained`` ids / paths of every Source under ``node``, in order, once each."""
    found: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop(0)
        if isinstance(item, dict):
            if isinstance(item.get("pretrained"), str) and set(item) <= {"pretrained", "subfolder", "config",
                                                                          "revision", "extra"}:
                found.append(item["pretrained"])
            stack += list(item.values())
        elif isinstance(item, list):
            stack += item
    return list(dict.fromkeys(found))


def _get(node: Any, *keys: str) -> Any:
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_fields(trainer: L.Trainer, pl_module: L.LightningModule, files: list[Path],
                config: dict[str, Any] | None) -> dict[str, str]:
    """The template fields for the run of ``trainer`` (``config``: the run's resolved config, or None)."""
    config = config or {}
    module = type(pl_module)
    generator = _get(config, "model", "init_args", "generator")
    bases = _sources(generator)
    base = (", ".join(f"`{b}`" for b in bases) if bases
            else "tiny random-initialised architecture (demo, no pretrained base)")
    data = _get(config, "data") or {}
    dirs = data.get("train_dirs")
    degradation = _get(data, "degradation") or {}
    preset = _get(degradation, "init_args", "preset")
    lora = _get(generator, "init_args", "lora") or {}
    opt_g, opt_d = (_get(config, "model", "init_args", k) or {} for k in ("optimizer_g", "optimizer_d"))
    recipe = [f"LoRA rank {lora['rank']}" if lora.get("rank") else "",
              f"lr G {_get(opt_g, 'init_args', 'lr')}, D {_get(opt_d, 'init_args', 'lr')}" if opt_g else "",
              f"accumulate {_get(config, 'model', 'init_args', 'accumulate')}"
              if _get(config, "model", "init_args", "accumulate") else ""]
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
               if k.startswith("val/") and getattr(v, "numel", lambda: 1)() == 1}
    run_dir = run_folder(trainer)
    rows = [f"| `{p.name}` | {p.stat().st_size / 1e6:.2f} MB | `{_sha256(p)}` |" for p in files if p.is_file()]
    usage = ("Point an inference or stage-2 config at the file, e.g. `--model.init_args.adapter1 <this "
             "folder>/stage1.safetensors`; in Python, `generator.load_adapter(path)` (diffusers/peft LoRA format: "
             "`load_lora_adapter(path, prefix=None, adapter_name=...)`).")
    return {
        "title": f"{module.__name__} adapter" + (f" ({run_dir.parent.name}/{run_dir.name})" if run_dir else ""),
        "module": f"{module.__module__}.{module.__name__}",
        "method": _METHODS.get(module.__name__, module.__name__),
        "base_model": base,
        "base_model_meta": f"base_model: {bases[0]}\n" if bases and looks_like_hub_id(bases[0]) else "",
        "steps": f"{trainer.global_step} of {trainer.max_steps}" if trainer.max_steps > 0 else str(trainer.global_step),
        "data": ", ".join(f"`{d}`" for d in ([dirs] if isinstance(dirs, str) else dirs))
                if dirs else "the photos bundled with scikit-image (demo)",
        "degradation": f"{(degradation.get('class_path') or 'default').rsplit('.', 1)[-1]}"
                       + (f", preset `{preset}`" if preset else ""),
        "crop_batch": f"{data.get('crop_size', '?')} px, batch {data.get('batch_size', '?')}",
        "recipe": "; ".join(r for r in recipe if r) or "see the config",
        "run_dir": str(run_dir) if run_dir else "unknown",
        "config_file": str(run_dir / "config.yaml") if run_dir else "unknown",
        "files": "\n".join(["| file | size | SHA-256 |", "| --- | ---: | --- |", *rows]),
        "metrics": ("\n".join(["| metric | value |", "| --- | ---: |",
                               *(f"| {k[4:]} | {v:.4f} |" for k, v in sorted(metrics.items()))])
                    + f"\n\nLast validation before step {trainer.global_step}.") if metrics
                   else "Not known yet: the run had not been validated when this adapter was exported.",
        "usage": usage,
    }


def render_card(trainer: L.Trainer, pl_module: L.LightningModule, files: list[Path]) -> str:
    """The filled model card of the run (the template's unknown fields stay empty)."""
    config = None
    run_dir = run_folder(trainer)
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    template = TEMPLATE.read_text() if TEMPLATE.is_file() else _FALLBACK
    fields = defaultdict(str, card_fields(trainer, pl_module, files, config))
    return template.format_map(fields)
