"""``compose:`` in config files (onestep_sr/config.py): the expansion into repeated ``--config`` (order, recursion,
relative paths, own keys last, the three spellings of the option, cycle and missing-file errors) and what the real
parser makes of it (``load_config``, ``main.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from onestep_sr import cli
from onestep_sr.config import ComposeError, expand_args, expand_config, load_config

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_files_then_own_keys_recursively_relative_to_each_file(tmp_path: Path) -> None:
    write(tmp_path / "parts" / "a.yaml", "a: 1\n")
    write(tmp_path / "parts" / "b.yaml", "compose: [a.yaml]\nb: 2\n")  # relative to parts/
    write(tmp_path / "other" / "c.yaml", "c: 3\n")
    run = write(tmp_path / "run.yaml", "# usage\ncompose: [parts/b.yaml, other/c.yaml]\nown: {x: 1.0e-4, y: null}\n")
    values = expand_config(run)
    assert len(values) == 4
    assert values[0] == str(tmp_path / "parts" / "a.yaml")
    assert yaml.safe_load(values[1]) == {"b": 2}  # b.yaml's own keys: after a.yaml, before c.yaml
    assert values[2] == str(tmp_path / "other" / "c.yaml")
    assert yaml.safe_load(values[3]) == {"own": {"x": 1e-4, "y": None}}  # the composing file's own keys come last


def test_expansion_order_is_depth_first(tmp_path: Path) -> None:
    for name, body in {"a": "a: 1\n", "b": "compose: [a.yaml]\nb: 1\n", "c": "compose: [b.yaml, a.yaml]\n",
                       "d": "d: 1\n"}.items():
        write(tmp_path / f"{name}.yaml", body)
    run = write(tmp_path / "run.yaml", "compose: [c.yaml, d.yaml]\n")  # no own keys: nothing after the files
    values = expand_config(run)
    assert len(values) == 4
    assert [Path(values[0]).name, yaml.safe_load(values[1]), Path(values[2]).name, Path(values[3]).name] == [
        "a.yaml", {"b": 1}, "a.yaml", "d.yaml"]


def test_a_file_without_compose_and_a_yaml_string_pass_unchanged(tmp_path: Path) -> None:
    plain = write(tmp_path / "plain.yaml", "model: {x: 1}\n")
    assert expand_config(plain) == [str(plain)]
    assert expand_config("{trainer: {max_steps: 3}}") == ["{trainer: {max_steps: 3}}"]
    assert expand_config(tmp_path / "absent.yaml") == [str(tmp_path / "absent.yaml")]  # jsonargparse reports it


def test_the_three_spellings_of_the_option(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "a: 1\n")
    run = write(tmp_path / "run.yaml", "compose: [a.yaml]\nb: 2\n")
    part, own = expand_config(run)
    assert expand_args(["fit", "--config", str(run), "--x", "1"]) == ["fit", "--config", part, "--config", own,
                                                                       "--x", "1"]
    assert expand_args([f"--config={run}"]) == [f"--config={part}", f"--config={own}"]
    assert expand_args(["-c", str(run), "--print_config"]) == ["-c", part, "-c", own, "--print_config"]
    assert expand_args(["--config"]) == ["--config"]  # a missing value is left to the parser


def test_own_keys_keep_their_spelling_and_config_paths_resolve_next_to_the_file(tmp_path: Path) -> None:
    write(tmp_path / "conf" / "a.yaml", "a: 1\n")
    write(tmp_path / "conf" / "gen.yaml", "init_args: {x: 1}\n")
    run = write(tmp_path / "conf" / "run.yaml",
                "compose: [a.yaml]\nlr: 1e-5\nmodel: {generator: gen.yaml, name: other.yaml, data: data/x}\n")
    own = expand_config(run)[-1]
    assert "lr: 1e-5" in own  # the scalar as written (jsonargparse reads 1e-5 as a float, PyYAML as a string)
    model = yaml.safe_load(own)["model"]
    assert model["generator"] == str(tmp_path / "conf" / "gen.yaml")  # an existing config file next to run.yaml
    assert model["name"] == "other.yaml" and model["data"] == "data/x"  # anything else is left as written


def test_missing_entry_names_the_file_and_the_entry(tmp_path: Path) -> None:
    run = write(tmp_path / "run.yaml", "compose: [parts/nope.yaml]\n")
    with pytest.raises(ComposeError, match=r"run\.yaml: compose entry 'parts/nope\.yaml' not found"):
        expand_config(run)
    write(tmp_path / "bad.yaml", "compose: parts/a.yaml\n")
    with pytest.raises(ComposeError, match=r"bad\.yaml: 'compose' must be a list"):
        expand_config(tmp_path / "bad.yaml")


def test_cycle_names_the_file_the_entry_and_the_chain(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "compose: [b.yaml]\n")
    write(tmp_path / "b.yaml", "compose: [sub/c.yaml]\n")
    write(tmp_path / "sub" / "c.yaml", "compose: [../a.yaml]\n")
    with pytest.raises(ComposeError, match=r"c\.yaml: compose entry '\.\./a\.yaml' forms a cycle: .*a\.yaml -> "
                                           r".*b\.yaml -> .*c\.yaml -> .*a\.yaml"):
        expand_config(tmp_path / "a.yaml")
    write(tmp_path / "self.yaml", "compose: [self.yaml]\n")
    with pytest.raises(ComposeError, match="forms a cycle"):
        expand_config(tmp_path / "self.yaml")


def test_the_parser_merges_composed_parts_like_repeated_config(tmp_path: Path) -> None:
    """jsonargparse receives the expansion: nested keys merge, later files win, own keys come last, a relative
    config path among the own keys is read next to the composing file."""
    demo = ROOT / "configs" / "demo" / "stage1.yaml"
    write(tmp_path / "parts" / "steps.yaml", "trainer: {max_steps: 6, log_every_n_steps: 3}\n")
    write(tmp_path / "parts" / "gen.yaml", "init_args: {timestep: 77}\n")  # a value file for `generator:`
    run = write(tmp_path / "parts" / "run.yaml",
                f"compose: [{demo}, steps.yaml]\ntrainer: {{max_steps: 8}}\n"
                "model: {init_args: {generator: gen.yaml}}\n")
    composed = load_config(run)
    base = load_config(demo)
    assert composed["trainer"]["max_steps"] == 8 and composed["trainer"]["log_every_n_steps"] == 3
    generator = composed["model"]["init_args"]["generator"]["init_args"]
    assert generator["timestep"] == 77
    assert generator["lora"] == base["model"]["init_args"]["generator"]["init_args"]["lora"]  # merged, not replaced
    composed["trainer"].update(max_steps=base["trainer"]["max_steps"], log_every_n_steps=2)
    generator["timestep"] = 200
    assert composed == base  # nothing else changed


def test_load_config_equals_print_config(capsys: pytest.CaptureFixture) -> None:
    config = ROOT / "configs" / "demo" / "stage2.yaml"
    with pytest.raises(SystemExit):
        cli.cli_main(["--config", str(config), "--print_config"], run=False)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert load_config(config) == printed
    assert "compose" not in printed and printed["trainer"]["logger"]["init_args"]["name"] == "demo_stage2"
    fit = load_config(config, subcommand="fit", args=["--ckpt_path", "last"])
    assert fit["ckpt_path"] == "last" and {k: v for k, v in fit.items() if k in printed} == printed


def test_main_reports_a_compose_error_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    run = write(tmp_path / "run.yaml", "compose: [missing.yaml]\n")
    monkeypatch.setattr(sys, "argv", ["main.py", "fit", "--config", str(run)])
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    missing = tmp_path / "missing.yaml"
    assert err.strip() == f"error: {run}: compose entry 'missing.yaml' not found (looked for {missing})"


def test_parts_work_as_plain_repeated_config() -> None:
    """configs/stage1.yaml is its parts given as repeated ``--config`` (nothing in them is expanded), plus the run's
    name (its folder, runs/stage1/version_<N>/): the README's example of composing by hand."""
    parts = [ROOT / "configs" / p for p in ("trainer/fit.yaml", "data/train.yaml", "method/tudsr_stage1.yaml",
                                            "method/tudsr.yaml", "backend/sd21.yaml")]
    assert all(expand_args(["--config", str(p)]) == ["--config", str(p)] for p in parts)
    by_hand = load_config(*parts, args=["--trainer.logger.init_args.name", "stage1"])
    run = load_config(ROOT / "configs" / "stage1.yaml")
    callbacks = by_hand["trainer"]["callbacks"]
    assert callbacks[0]["init_args"]["dirpath"] is None and callbacks[2]["init_args"]["dirpath"] is None  # run folder
    assert by_hand == run
