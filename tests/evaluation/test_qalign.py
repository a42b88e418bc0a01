"""QAlign: the 8 B mPLUG-Owl2 cannot be built here, so the test writes a tiny snapshot folder of the same classes
(mPLUG-Owl2 LLaMA with one 32-wide layer and a one-layer visual encoder, a LLaMA BPE tokenizer knowing the five
level words, a CLIP image processor at 28 px) and checks the exact pyiqa call path on it: loading from the folder,
one image per call, and the score = softmax over the (excellent, good, fair, poor, bad) logits at the answer
position, weighted 5..1. (The tiny random model barely looks at the image: the scores of different images agree to
fp16 precision, so the per-image split is checked by counting calls.)"""

from __future__ import annotations

import pytest
import torch

from evaluation import MetricUnavailable, QAlign, quantize_8bit

pytest.importorskip("pyiqa", reason="QAlign needs the optional pyiqa extra")
pytest.importorskip("icecream", reason="pyiqa's mPLUG-Owl2 code imports icecream")

LEVELS = ["excellent", "good", "fair", "poor", "bad"]


def _tiny_snapshot(folder) -> None:
    from pyiqa.archs.q_align import modeling_mplug_owl2 as owl
    from pyiqa.archs.q_align.configuration_mplug_owl2 import MPLUGOwl2Config
    from transformers import CLIPImageProcessor
    from transformers.models.llama import LlamaTokenizer

    vocab, merges = {"<unk>": 0, "<s>": 1, "</s>": 2}, []
    for word in (f"▁{w}" for w in LEVELS):  # whole-word tokens, built by BPE merges from single characters
        for ch in word:
            vocab.setdefault(ch, len(vocab))
        for i in range(2, len(word) + 1):
            if word[:i] not in vocab:
                vocab[word[:i]] = len(vocab)
                merges.append((word[: i - 1], word[i - 1]))
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges)
    processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                   image_mean=[0.48145466, 0.4578275, 0.40821073],
                                   image_std=[0.26862954, 0.26130258, 0.27577711])
    visual = {"visual_model": dict(hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=1,
                                   num_attention_heads=2, image_size=28, patch_size=14),
              "visual_abstractor": dict(num_learnable_queries=4, hidden_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=64, encoder_hidden_size=32,
                                        grid_size=2)}
    config = MPLUGOwl2Config(visual_config=visual, vocab_size=len(vocab) + 8, hidden_size=32, intermediate_size=64,
                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                             max_position_embeddings=256)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(owl.LlamaTokenizer, "from_pretrained", lambda *_, **__: tokenizer)
        mp.setattr(owl.CLIPImageProcessor, "from_pretrained", lambda *_, **__: processor)
        torch.manual_seed(0)
        model = owl.MPLUGOwl2LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.3)  # spread the level logits
    model.half().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)


def test_qalign_runs_pyiqas_path_on_a_tiny_snapshot(tmp_path, monkeypatch) -> None:
    from pyiqa.archs.q_align.modeling_mplug_owl2 import IMAGE_TOKEN_INDEX, tokenizer_image_token
    from pyiqa.archs.qalign_arch import expand2square
    from torchvision.transforms.functional import to_pil_image

    _tiny_snapshot(tmp_path / "one-align")
    metric = QAlign(weights={"qalign": str(tmp_path / "one-align")})
    model = metric.net.model
    assert model.dtype == torch.float16 and len(set(model.preferential_ids_)) == 5  # five distinct level words
    g = torch.Generator().manual_seed(0)
    images = quantize_8bit(torch.rand(2, 3, 40, 30, generator=g))
    calls: list[tuple[int, ...]] = []
    forward = type(metric.net).forward
    monkeypatch.setattr(type(metric.net), "forward", lambda self, x, **k: calls.append(tuple(x.shape)) or
                        forward(self, x, **k))
    scores = metric.update(images)
    assert calls == [(1, 3, 40, 30)] * 2  # pyiqa's QAlign takes one image per call
    assert scores.shape == (2,) and ((scores > 1) & (scores < 5)).all()

    prompt = "USER: How would you rate the quality of this image?\n<|image|>\nASSISTANT: The quality of the image is"
    ids = tokenizer_image_token(prompt, model.tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]
    for i in range(2):  # the score head, re-derived from the model's logits
        square = expand2square(to_pil_image(images[i].float()))
        pixels = metric.net.image_processor.preprocess(square, return_tensors="pt")["pixel_values"].half()
        with torch.no_grad():
            logits = model(ids, images=pixels)["logits"][0, -1, model.preferential_ids_].float()
        expected = (logits.softmax(-1) * torch.tensor([5.0, 4, 3, 2, 1])).sum()
        assert scores[i].item() == pytest.approx(expected.item(), abs=2e-3)  # fp16 head in pyiqa


def test_qalign_without_snapshot_names_the_repository(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(MetricUnavailable, match="q-future/one-align"):
        QAlign(weights={"qalign": str(tmp_path / "absent")})
    with pytest.raises(MetricUnavailable, match="random-weight"):
        QAlign(random_init=True)
