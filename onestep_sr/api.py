"""Python API: upscale images with a predict config, the model built exactly as ``onestep-sr predict`` builds it.

    from onestep_sr import Upscaler
    up = Upscaler.from_config("configs/predict_x4.yaml")
    sr = up(Image.open("photo.jpg"))

Inputs and outputs are of the same kind: a PIL image (RGB out), a numpy array ``(H, W, 3)`` (``uint8`` in
[0, 255] or float in [0, 1], same dtype back), or a tensor ``(3, H, W)`` / ``(B, 3, H, W)`` in [0, 1] (same dtype
and device back).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from datamodules.images import tensor_to_uint8
from models.errors import UserError

__all__ = ["InputError", "Upscaler"]

SCALE_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "scale"  # x4.yaml, x8.yaml (TUDSR's M)
ImageLike = TypeVar("ImageLike", Image.Image, np.ndarray, torch.Tensor)


class InputError(UserError, TypeError):
    """An input that is not an RGB image of a supported kind (the message names what was expected)."""


_EXPECTED = ("a PIL image, a numpy array (H, W, 3) of uint8 in [0, 255] or float in [0, 1], "
             "or a tensor (3, H, W) / (B, 3, H, W) in [0, 1]")


def _override_args(overrides: Sequence[str] | Mapping[str, Any] | None) -> list[str]:
    """CLI-style overrides: ``["--model.init_args.x", "1"]`` as given, or ``{"model.init_args.x": 1}``."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        import yaml

        return [part for key, value in overrides.items()
                for part in (f"--{key.lstrip('-')}", value if isinstance(value, str) else
                             yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n..."))]
    return [str(part) for part in overrides]


class Upscaler:
    """A predict LightningModule (e.g. ``TUDSRInference``) wrapped for single images.

    Build it with :meth:`from_config`; call it on an image. ``device``/``dtype`` place the module's weights (the
    pipeline's own autocast setting, ``model.init_args.pipeline.init_args.dtype``, stays as configured).
    """

    def __init__(self, module: torch.nn.Module, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, scale: int | None = None) -> None:
        self.module, self._scale = module, scale  # scale: for modules without ``native_scale`` (data.predict_scale)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        module.to(device=self.device, dtype=dtype)
        module.eval()
        hook = getattr(module, "on_predict_start", None)
        if callable(hook):
            hook()  # the module's own preparation for predict (eval mode, weight loading)

    @classmethod
    def from_config(cls, config: str | os.PathLike, overrides: Sequence[str] | Mapping[str, Any] | None = None,
                    scale: int | None = None, device: str | torch.device | None = None,
                    dtype: torch.dtype | None = None) -> Upscaler:
        """Build the model of a predict ``config`` through the CLI's parser (composed configs, validation, the
        missing-weights check, seed), with ``overrides`` as on the command line (a list of arguments, or a dict
        ``{"model.init_args.adapter1": "a.safetensors"}``) and ``scale`` (4 or 8) from ``configs/scale/``."""
        from onestep_sr.cli import cli_main

        args = ["--config", os.fspath(config)]
        if scale is not None:
            scale_file = SCALE_CONFIGS / f"x{scale}.yaml"
            if not scale_file.is_file():
                options = sorted(int(p.stem[1:]) for p in SCALE_CONFIGS.glob("x*.yaml"))
                raise UserError(f"scale={scale} is not available: choose one of {options}")
            args += ["--config", str(scale_file)]
        cli = cli_main(args + _override_args(overrides), run=False)
        up = cls(cli.model, device=device, dtype=dtype, scale=getattr(cli.datamodule, "predict_scale", None))
        if scale is not None and up.scale != scale:
            raise UserError(f"{config} produces x{up.scale}, not x{scale}: this model has no x{scale} setting")
        return up

    @property
    def scale(self) -> int:
        """The factor the model produces."""
        native = getattr(self.module, "native_scale", None)
        if native is None and self._scale is None:
            raise UserError(f"{type(self.module).__name__} has no native_scale: set data.predict_scale in the config")
        return int(native if native is not None else self._scale)

    def upscale_tensor(self, lq: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) in [0, 1] -> (B, 3, h*s, w*s) float32 in [0, 1] on the module's device."""
        batch = {"lq": lq.to(self.device, torch.float32), "name": [f"image_{i}" for i in range(lq.shape[0])],
                 "scale": self.scale}
        with torch.inference_mode():
            return self.module.predict_step(batch, 0)["sr"].float().clamp(0, 1)

    def __call__(self, image: ImageLike) -> ImageLike:
        if isinstance(image, Image.Image):
            array = np.asarray(image.convert("RGB"))
            return Image.fromarray(self(array))
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3:
                raise InputError(f"expected {_EXPECTED}; got a numpy array of shape {image.shape}")
            if image.dtype == np.uint8:
                lq = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
                return tensor_to_uint8(self.upscale_tensor(lq)[0])
            if not np.issubdtype(image.dtype, np.floating):
                raise InputError(f"expected {_EXPECTED}; got a numpy array of dtype {image.dtype}")
            lq = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
            return self.upscale_tensor(lq)[0].permute(1, 2, 0).cpu().numpy().astype(image.dtype)
        if isinstance(image, torch.Tensor):
            if image.ndim not in (3, 4) or image.shape[-3] != 3 or not image.is_floating_point():
                raise InputError(f"expected {_EXPECTED}; got a {image.dtype} tensor of shape {tuple(image.shape)}")
            sr = self.upscale_tensor(image if image.ndim == 4 else image[None])
            return (sr if image.ndim == 4 else sr[0]).to(image.device, image.dtype)
        raise InputError(f"expected {_EXPECTED}; got {type(image).__name__}")
