"""``main.py --help`` (and ``--<key>.help CLASS``) describes every data and model option in words and refers to no
file outside the repository. Walks the help text jsonargparse prints for the main classes: an option whose help is
only its type and default (a constructor argument without an ``Args:`` entry) fails the test."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from onestep_sr.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")

M = "--model.init_args"
STAGE1 = ["fit", "--model", "lightning_modules.stage1.Stage1Module"]
DIT = ["fit", "--model", "lightning_modules.dit_distill.DiTDistillModule"]
DIT_G = [*DIT, f"{M}.generator", "models.generators.dit_onestep.OneStepDiTGenerator"]
CASES = {  # class -> the command line that prints its help, as a user types it
    "SRDataModule": ["fit", "--help"],
    "EvalSet": ["fit", "--data.val_sets.help"],
    "RealESRGANDegradation": ["fit", "--data.degradation.help", "datamodules.degradation.RealESRGANDegradation"],
    "Stage1Module": ["fit", "--model.help", "lightning_modules.stage1.Stage1Module"],
    "Stage2Module": ["fit", "--model.help", "lightning_modules.stage2.Stage2Module"],
    "DiTDistillModule": ["fit", "--model.help", "lightning_modules.dit_distill.DiTDistillModule"],
    "TUDSRInference": ["predict", "--model.help", "lightning_modules.tudsr_inference.TUDSRInference"],
    "OneStepSDGenerator": [*STAGE1, f"{M}.generator.help", "models.generators.sd_onestep.OneStepSDGenerator"],
    "OneStepDiTGenerator": [*DIT, f"{M}.generator.help", "models.generators.dit_onestep.OneStepDiTGenerator"],
    "Flux2Backend": [*DIT_G, f"{M}.generator.init_args.backend.help", "models.generators.flux2_backend.Flux2Backend"],
    "ZImageBackend": [*DIT_G, f"{M}.generator.init_args.backend.help",
                      "models.generators.zimage_backend.ZImageBackend"],
    "VLMCondition": [*DIT_G, f"{M}.generator.init_args.condition.help", "models.conditions.VLMCondition"],
    "TextEmbeddingCondition": [*DIT_G, f"{M}.generator.init_args.condition.help",
                               "models.conditions.text.TextEmbeddingCondition"],
    "DINOv3Discriminator": [*STAGE1, f"{M}.discriminator.help",
                            "models.discriminators.multilevel.DINOv3Discriminator"],
    "CLIPConvNeXtDiscriminator": [*STAGE1, f"{M}.discriminator.help",
                                  "models.discriminators.multilevel.CLIPConvNeXtDiscriminator"],
    "WeightedLoss": [*STAGE1, f"{M}.reconstruction.help", "losses.weighted.WeightedLoss"],
    "SoftLabelBCE": [*STAGE1, f"{M}.adversarial.help", "losses.adversarial.SoftLabelBCE"],
    "RaGAN": [*STAGE1, f"{M}.adversarial.help", "losses.adversarial.RaGAN"],
    "ApproxR1": [*STAGE1, f"{M}.r1.help", "losses.r1.ApproxR1"],
}
TYPE_ONLY = re.compile(r"\s*\((required, )?type:.*$", re.S)  # jsonargparse's "(type: ..., default: ...)" suffix


def help_text(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as info:
        cli_main(args)
    assert info.value.code in (0, None), out.getvalue()[-2000:]
    return out.getvalue()


def options(text: str) -> dict[str, str]:
    """``--option`` -> its description (type/default suffix removed) for every option block of a help text."""
    found = {}
    for block in re.split(r"\n(?=  -)", text):
        if not block.startswith("  --"):
            continue
        first, *rest = block.split("\n")
        parts = re.split(r"\s{2,}", first[2:], maxsplit=1)  # the option, then (on the same line) its text
        signature, description = parts[0], parts[1] if len(parts) > 1 else ""
        text_lines = [description, *(line.strip() for line in rest if line.startswith("    "))]
        found[signature.split()[0].rstrip(",")] = TYPE_ONLY.sub("", " ".join(text_lines)).strip()
    return found


def test_the_walk_sees_a_missing_description() -> None:
    text = ("Title:\n  --data.a A             the first one. (type: int, default: 1)\n"
            "  --data.b B             (type: int, default: 2)\n  --data.long_option_name LONG_OPTION_NAME\n"
            "                        (required, type: str)\n  --data.c C             a path\n"
            "                        over two lines (type: str)\n")
    assert options(text) == {"--data.a": "the first one.", "--data.b": "", "--data.long_option_name": "",
                             "--data.c": "a path over two lines"}


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    return {name: help_text(args) for name, args in CASES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_every_option_is_described(helps: dict[str, str], name: str) -> None:
    found = options(helps[name])
    if name == "SRDataModule":  # `fit --help`: the data options (the trainer's are Lightning's)
        found = {k: v for k, v in found.items() if k.startswith("--data.")}
    found = {k: v for k, v in found.items() if not k.endswith(".help") and v != "Path to a configuration file."}
    assert found, helps[name][:2000]
    assert [k for k, v in found.items() if not v] == []


@pytest.mark.parametrize("name", list(CASES))
def test_help_refers_to_no_file_outside_the_repository(helps: dict[str, str], name: str) -> None:
    text = helps[name]
    assert not re.search(r"(?<![\w.])/(work|home|tmp|root|Users)/", text)
    assert not re.search(r"reference\.md|shared/notes|PLAN\.md|issue \d+", text)
    for path in re.findall(r"(?<![\w/])((?:configs|docs|models|losses|datamodules|lightning_modules|callbacks|"
                           r"plugins|evaluation|onestep_sr)/[\w./-]*\w)", text):
        assert (ROOT / path).exists() or (ROOT / path).with_suffix(".py").exists(), f"{name}: {path}"
