"""TUDSR inference (paper section 3.8, Fig. 2(b)) as a generator-only LightningModule for ``onestep-sr test`` and
``onestep-sr predict``, on the SD UNet generator (TUDSR) or StrSR's DiT generator (FLUX.2 / Z-Image)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lightning_modules.inference_base import GeneratorInference
from models.inference.tudsr import TUDSRPipeline
from models.pretrained import WeightArg, declare_weights, require_file


@declare_weights(
    adapter1=WeightArg("TUDSR stage-1 adapter", file=True,
                       how="train stage 1 (python main.py fit --config configs/stage1.yaml, or configs/demo/stage1.yaml; "
                           "on the DiT: configs/strsr_flux2.yaml) and point this key at its runs/<run>/version_<N>/"
                           "export/stage1.safetensors (on the DiT: strsr.safetensors)"),
    adapter2=WeightArg("TUDSR stage-2 adapter", file=True,
                       how="train stage 2 (python main.py fit --config configs/stage2.yaml, or configs/demo/stage2.yaml; "
                           "on the DiT: configs/strsr_stage2_flux2.yaml) and point this key at its "
                           "runs/<run>/version_<N>/export/stage2.safetensors"))
class TUDSRInference(GeneratorInference):
    """x -> up xM -> G(adapter 1, t1) -> bilinear xN -> G(adapter 2, t2); x4 = M2N2, x8 = M4N2.

    ``pipeline`` is the :class:`~models.inference.tudsr.TUDSRPipeline` around ``generator``, with every setting of
    the two passes (factors, noise levels, tiling, colour fix, autocast dtype); this module loads the exported adapter
    files into the *one* backbone under the names the pipeline switches between (``pipeline.adapter1`` /
    ``pipeline.adapter2``, ``set_adapter``), all frozen. With ``pipeline.adapter2: null`` and no ``adapter2`` file
    only stage 1 runs (output xM). No discriminator, loss network or optimiser is built.

    The generator is any :class:`~models.protocols.OneStepGenerator`: ``OneStepSDGenerator`` (t1 = 200, t2 = 50) or
    ``OneStepDiTGenerator`` (sigma 0.8 and 0.6; its DiT exports carry the adaptive MLP next to the LoRA, shared by
    both stages, and the VLM condition of the whole LR is computed once and shared by both passes and all tiles;
    a batch's ``cond_features``, from the data pipeline's feature cache, replaces the VLM).

    Every evaluation or predict batch is restored at the pipeline's scale (``pipeline.scale``, its native scale);
    a batch that carries another ``scale`` raises an error naming both.

    Args:
        generator: ``OneStepSDGenerator`` or ``OneStepDiTGenerator`` built without a trainable adapter
            (``lora: null``).
        adapter1: the stage-1 adapter file exported by a stage-1 run (``runs/<run>/version_<N>/export/
            stage1.safetensors``), loaded frozen as ``pipeline.adapter1``.
        adapter2: the stage-2 adapter file exported by a stage-2 run, loaded frozen as ``pipeline.adapter2``;
            ``null`` with ``pipeline.adapter2: null`` runs stage 1 only.
        pipeline: builds the pipeline around ``generator``. YAML: ``class_path: models.inference.tudsr.TUDSRPipeline``
            with its ``init_args`` (all but the generator); Python: ``functools.partial(TUDSRPipeline, m=4)``.
        channels_last: store the VAE (and UNet) convolutions channels-last (faster convolutions on GPUs).
        compile: ``torch.compile`` the UNet / DiT transformer in place (adapter switching keeps working; the first
            image compiles).
    """

    def __init__(
        self,
        generator: nn.Module,
        adapter1: str,
        adapter2: str | None = None,
        pipeline: Callable[[nn.Module], TUDSRPipeline] = TUDSRPipeline,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        pipeline = pipeline(generator)
        if pipeline.adapter1 is None:
            raise ValueError("TUDSRInference loads the adapter1 file into pipeline.adapter1, which is null: name it "
                             "(pipeline.adapter1: stage1)")
        if pipeline.adapter2 is not None and adapter2 is None:
            raise ValueError(f"pipeline.adapter2 is '{pipeline.adapter2}' (two stages) but no adapter2 file is given: "
                             "set adapter2 to the exported stage-2 file, or pipeline.adapter2: null for stage 1 only")
        if pipeline.adapter2 is None and adapter2 is not None:
            raise ValueError(f"an adapter2 file is given ('{adapter2}') but pipeline.adapter2 is null (stage 1 only): "
                             "name the stage-2 adapter (pipeline.adapter2: stage2), or drop adapter2")
        if pipeline.adapter1 == pipeline.adapter2:
            raise ValueError(f"pipeline.adapter1 and pipeline.adapter2 are both '{pipeline.adapter1}': the two stages "
                             "need two adapter names")
        self.pipeline = pipeline
        generator.load_adapter(require_file("TUDSR stage-1 adapter", adapter1), pipeline.adapter1, trainable=False)
        if adapter2 is not None:
            generator.load_adapter(require_file("TUDSR stage-2 adapter", adapter2), pipeline.adapter2, trainable=False)
        generator.requires_grad_(False)  # inference only (the DiT's adaptive MLP is a plain module)
        sd = pipeline.latent_passes
        if channels_last:
            for net in (generator.unet, generator.vae) if sd else (generator.backend.vae,):
                net.to(memory_format=torch.channels_last)
        if compile:
            (generator.unet if sd else generator.backend.transformer).compile()

    @property
    def generator(self) -> nn.Module:
        """The pipeline's generator (UNet or DiT, both adapters loaded)."""
        return self.pipeline.generator

    @property
    def native_scale(self) -> int:
        """The factor this pipeline produces: M x N (M with stage 1 only)."""
        return self.pipeline.scale

    def check_scale(self, scale: int) -> None:
        if scale != self.native_scale:
            p = self.pipeline
            stages = f"M{p.m}N{p.n}" if p.adapter2 is not None else f"M{p.m}, stage 1 only"
            raise ValueError(f"the batch asks for x{scale}, but this TUDSR pipeline produces x{self.native_scale} "
                             f"({stages}): evaluate it on x{self.native_scale} sets (data.predict_scale for "
                             f"predict), or set pipeline.m so that M x N = {scale}")

    def restore(self, lq: Tensor, scale: int, cond_features: Tensor | None = None) -> Tensor:
        """(B, 3, h, w) [0, 1] -> (B, 3, h*scale, w*scale) [0, 1] with ``scale`` = :attr:`native_scale`."""
        self.check_scale(scale)
        return self.pipeline(lq, cond_features=cond_features)
