"""The README's demo chain, run as written on a clean clone: stage 1 -> stage 2 -> predict x4 / x8 -> test.

The tracked files of the repository are copied into a fresh git repository (a clean clone without the history);
the commands of the README's first "demo chain" block run there one after the other, each as a user types it.
Afterwards every output is where the README says, the sizes are exact, and ``git status`` is clean: nothing is
written outside the ignored ``runs/``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def readme_chain() -> list[list[str]]:
    """The commands of the first ```bash block under "## The demo chain", ``\\``-continued lines joined."""
    section = (ROOT / "README.md").read_text().split("## The demo chain", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.split(r"\s+#", line, maxsplit=1)[0].strip()
        if line:
            commands.append(shlex.split(line))
    return commands


def git(clone: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=clone, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's tracked and new (not ignored) files in a fresh repository with one commit."""
    clone = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    git(clone, "init", "-q")
    git(clone, "add", "-A")
    git(clone, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "clean clone")
    return clone


def test_readme_demo_chain_on_a_clean_clone(clone: Path) -> None:
    commands = readme_chain()
    assert [c[1:3] for c in commands] == [["main.py", "fit"], ["main.py", "fit"], ["-m", "datamodules.preview"],
                                          ["main.py", "predict"], ["main.py", "predict"], ["main.py", "test"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(clone.parent / "hf"), OMP_NUM_THREADS="1")
    for command in commands:
        assert command[0] == "python"
        result = subprocess.run([sys.executable, *command[1:]], cwd=clone, env=env, capture_output=True, text=True,
                                timeout=1800)
        assert result.returncode == 0, f"{shlex.join(command)}\n{result.stderr[-4000:]}"
        assert "Traceback" not in result.stderr, result.stderr[-4000:]

    runs = clone / "runs"
    for stage in ("stage1", "stage2"):
        run = runs / f"demo_{stage}" / "version_0"
        assert (run / "export" / f"{stage}.safetensors").is_file() and (run / "export" / "README.md").is_file()
        assert (run / "eval" / "val" / "summary.md").is_file()  # validated at its last step
        assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    inputs = sorted((runs / "demo_photos").glob("*.png"))
    assert inputs
    for scale in (4, 8):
        predictions = runs / f"demo_predict_x{scale}" / "predict_0" / "predictions"
        for image in inputs:
            w, h = Image.open(image).size
            assert Image.open(predictions / image.name).size == (w * scale, h * scale)
    assert (runs / "demo_predict_x4" / "test_0" / "eval" / "test" / "summary.md").is_file()
    assert git(clone, "status", "--porcelain") == ""
