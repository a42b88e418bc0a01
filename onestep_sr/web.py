"""A local before/after page: upload a photo, choose model and scale, compare with a slider, download the PNG.

    pip install -e ".[web]"
    python -m onestep_sr.web                      # http://127.0.0.1:7860, the demo config (offline)
    python -m onestep_sr.web --config configs/predict_x4.yaml --config configs/predict_x8.yaml

Safe by default: binds 127.0.0.1 (``--host 0.0.0.0`` to serve others), never opens a public share link, no
analytics; files that are not images, or have more than ``--max-pixels`` pixels, are refused with a message.
Built on :class:`onestep_sr.api.Upscaler`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

from PIL import Image  # noqa: E402

DEMO_CONFIG = str(Path(__file__).resolve().parents[1] / "configs/demo/predict_x4.yaml")
DEFAULT_MAX_PIXELS = 1_000_000  # input pixels; the output has scale**2 times as many
SCALES = ("native", "4", "8")


def refusal(path: str | None, max_pixels: int) -> str | None:
    """Why the uploaded file at ``path`` is refused (not an image, too many pixels), or None."""
    if path is None:
        return "Upload an image first (PNG, JPEG, WebP, ...)."
    name = Path(path).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        return f"Refused: '{name}' is too large (over {max_pixels:,} pixels)."
    except Exception:  # UnidentifiedImageError, OSError, ... from the format plugins
        return f"Refused: '{name}' is not an image file (expected PNG, JPEG, WebP, BMP or TIFF)."
    if width * height > max_pixels:
        return (f"Refused: '{name}' is too large: {width}x{height} = {width * height:,} pixels, "
                f"the limit is {max_pixels:,} (--max-pixels).")
    return None


class Models:
    """One :class:`~onestep_sr.api.Upscaler` per (config, scale), built on first use."""

    def __init__(self, configs: Sequence[str], device: str | None = None) -> None:
        self.configs, self.device, self._built = list(configs), device, {}

    def get(self, config: str, scale: str) -> Any:
        from onestep_sr.api import Upscaler

        key = (config, scale)
        if key not in self._built:
            self._built[key] = Upscaler.from_config(config, scale=None if scale == "native" else int(scale),
                                                    device=self.device)
        return self._built[key]


def build_page(configs: Sequence[str], max_pixels: int = DEFAULT_MAX_PIXELS, device: str | None = None) -> Any:
    """The gradio Blocks page (not launched)."""
    import gradio as gr

    models, out_dir = Models(configs, device), Path(tempfile.mkdtemp(prefix="onestep_sr_web_"))

    def upscale(path: str | None, config: str, scale: str) -> tuple[Any, Any, str]:
        message = refusal(path, max_pixels)
        if message is not None:
            return None, None, message
        try:
            up = models.get(config, scale)
            with Image.open(path) as image:
                before = image.convert("RGB")
            after = up(before)
        except Exception as err:  # missing weights, bad config: shown on the page
            return None, None, f"Error: {err}"
        target = out_dir / f"{Path(path).stem}_x{up.scale}.png"
        after.save(target)
        shown = before.resize(after.size, Image.Resampling.NEAREST)  # the input at the output's size
        return (shown, after), str(target), (f"{before.width}x{before.height} -> {after.width}x{after.height} "
                                             f"(x{up.scale}, {Path(config).name})")

    with gr.Blocks(title="onestep-sr", analytics_enabled=False) as page:
        gr.Markdown("# onestep-sr: one-step super-resolution\nUpload a photo; the slider compares the input "
                    "(nearest-neighbour enlarged) with the result.")
        with gr.Row():
            upload = gr.File(label="Image", file_types=None, elem_id="upload")
            with gr.Column():
                config = gr.Dropdown(list(configs), value=configs[0], label="Model (config)", elem_id="config")
                scale = gr.Radio(list(SCALES), value="native", label="Scale", elem_id="scale")
                run = gr.Button("Upscale", variant="primary", elem_id="run")
        status = gr.Markdown(elem_id="status")
        slider = gr.ImageSlider(label="Before / after", type="pil", format="png", elem_id="slider")
        download = gr.File(label="Download PNG", elem_id="download")
        run.click(upscale, [upload, config, scale], [slider, download, status])
    return page


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="onestep-sr-web", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", help=f"a predict config (repeat for a list); default {DEMO_CONFIG}")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="largest input accepted (pixels)")
    parser.add_argument("--device", default=None, help="torch device of the models (default cpu)")
    args = parser.parse_args(argv)
    page = build_page(args.config or [DEMO_CONFIG], args.max_pixels, args.device)
    page.queue(default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port, share=False,
                                                   footer_links=[], max_file_size="100mb")


if __name__ == "__main__":
    main()
