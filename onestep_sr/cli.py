"""The onestep-sr LightningCLI: ``python main.py {fit,validate,test,predict} --config configs/....yaml``.

What the command line adds to LightningCLI:

- composed configs (``compose:``, :mod:`onestep_sr.config`) and options spelled out in full (no abbreviations);
- before anything is built, every weight the config needs is checked, and all missing ones are reported in one
  message (:mod:`onestep_sr.preflight`);
- one run folder per run, continued on resume, removed again when a run fails before writing anything of value
  (:mod:`onestep_sr.runs`); the resolved config saved inside it, never in the working directory;
- a console that says what happens: a step / loss / speed line (:mod:`callbacks.console`), no library chatter
  (:mod:`onestep_sr.console`), a last validation at the end of training (:mod:`callbacks.final_validation`) and one
  line per output at the end (:mod:`callbacks.outputs`);
- user errors (:class:`models.errors.UserError`: bad options or values, missing folders, weights or adapters) end
  as one line ``error: ...`` with exit status 2 and no traceback. ``ONESTEP_SR_TRACEBACK=1`` shows the traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from argparse import ArgumentError
from typing import Any

import yaml
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.cli import LightningCLI

from callbacks.console import CompactModelSummary, StepProgressBar
from callbacks.final_validation import ValidateAtEnd
from callbacks.outputs import RunOutputs
from callbacks.prediction_writer import PredictionWriter
from datamodules import SRDataModule
from models.errors import ConfigError, UserError, user_error_cause
from onestep_sr.config import expand_args
from onestep_sr.console import quiet_libraries
from onestep_sr.preflight import check_weights
from onestep_sr.runs import RunConfigSaver, RunFolder, prepare_run_folder

_ARGS_WARNING = "LightningCLI's args parameter is intended"  # raised whenever sys.argv is non-empty as well
_SUBCOMMANDS = ("fit", "validate", "test", "predict")
_PROJECT = {"models", "losses", "evaluation", "datamodules", "lightning_modules", "callbacks", "plugins", "onestep_sr"}


def config_error(err: BaseException) -> UserError | None:
    """The user error behind ``err``, an exception raised while the config's classes were built: a
    :class:`UserError` in its chain, or a ``ValueError`` that a constructor of this project raised about one of its
    arguments (reported with the class it came from). None for anything else (a bug keeps its traceback)."""
    found = user_error_cause(err)
    if found is not None:
        return found
    inner, seen = err, {id(err)}
    while (inner.__cause__ or inner.__context__) is not None and id(inner.__cause__ or inner.__context__) not in seen:
        inner = inner.__cause__ or inner.__context__
        seen.add(id(inner))
    if not isinstance(inner, ValueError) or inner.__traceback__ is None:
        return None
    frames = [frame for frame, _ in traceback.walk_tb(inner.__traceback__)]
    if str(frames[-1].f_globals.get("__name__", "")).split(".")[0] not in _PROJECT:
        return None  # raised inside a library: not a message of ours
    owners = [type(f.f_locals["self"]) for f in frames if f.f_code.co_name == "__init__" and "self" in f.f_locals]
    owner = next((o for o in reversed(owners) if o.__module__.split(".")[0] in _PROJECT), None)
    where = f" for {owner.__module__}.{owner.__qualname__}" if owner is not None else ""
    return ConfigError(f"invalid config value{where}: {inner}")


class OneStepSRCLI(LightningCLI):
    """LightningCLI with TensorBoard by default, the resolved config saved in every run folder and a PNG writer."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 - jsonargparse parser
        parser.add_lightning_class_args(PredictionWriter, "writer")

    def parse_arguments(self, parser, args) -> None:  # noqa: ANN001 - LightningCLI hook
        with warnings.catch_warnings():
            if isinstance(args, list) and args == expand_args(sys.argv[1:]):
                # main() passes the expanded command line: not the mistake this warning is about
                warnings.filterwarnings("ignore", message=_ARGS_WARNING)
            super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        """Check every weight of the config (one message for all missing ones) and choose the run folder."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_weights(yaml.safe_load(self._parser(self.subcommand).dump(config, skip_validation=True)))
        if self.subcommand:
            prepare_run_folder(config, self.subcommand)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as err:
            found = config_error(err)
            if found is None or found is err:
                raise
            raise found from err

    def instantiate_trainer(self, **kwargs: Any):  # noqa: ANN201 - a Trainer
        extra = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        given = list(config.get("callbacks") or [])
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in given):
            extra.append(StepProgressBar())
        if config.get("enable_model_summary") is not False and not any(isinstance(c, ModelSummary) for c in given):
            extra.append(CompactModelSummary())
        if self.subcommand in (None, "fit"):
            extra.append(ValidateAtEnd())
        extra.append(RunOutputs())
        return self._instantiate_trainer(config, extra)

    def _run_subcommand(self, subcommand: str) -> None:
        folder = RunFolder(self.trainer)
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            folder.clean_failed_start()
            raise


def _build(cli_class: type[OneStepSRCLI], args: Any, run: bool) -> OneStepSRCLI:
    strict = {"exit_on_error": False, "allow_abbrev": False}
    return cli_class(
        datamodule_class=SRDataModule,
        subclass_mode_model=True,
        save_config_callback=RunConfigSaver,
        parser_kwargs={**strict, **{name: dict(strict) for name in _SUBCOMMANDS}},
        trainer_defaults={
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": "runs"}},
        },
        args=args,
        run=run,
    )


def cli_main(args: list[str] | None = None, run: bool = True) -> OneStepSRCLI:
    """Build (and with ``run``, run) the CLI; ``args`` default to ``sys.argv[1:]``. Composed configs (a ``compose:``
    key) are expanded into repeated ``--config`` first (:mod:`onestep_sr.config`). A user error leaves as the
    :class:`models.errors.UserError` behind it (Lightning and jsonargparse wrap some)."""
    quiet_libraries()
    if args is None or isinstance(args, (list, tuple)):
        args = expand_args(sys.argv[1:] if args is None else args)
    try:
        return _build(OneStepSRCLI, args, run)
    except Exception as err:
        found = user_error_cause(err)
        if found is None or found is err:
            raise
        raise found from None


class _Parsed(Exception):
    def __init__(self, parser: Any, config: Any) -> None:
        super().__init__("parsed")
        self.parser, self.config = parser, config


class _ParseOnlyCLI(OneStepSRCLI):
    """Stops right after parsing: nothing is seeded, built or run."""

    def parse_arguments(self, parser, args) -> None:  # noqa: ANN001 - LightningCLI hook
        super().parse_arguments(parser, args)
        raise _Parsed(parser, self.config)


def parse_config(args: list[str], subcommand: str | None = None) -> dict[str, Any]:
    """The config that ``args`` resolve to, as ``--print_config`` prints it, without instantiating anything. With a
    ``subcommand`` (``fit``, ``test``, ...) its own options are accepted too (``ckpt_path``, as in the config a run
    saves). Use :func:`onestep_sr.config.load_config` for a list of files."""
    argv = expand_args(args if subcommand is None else [subcommand, *args])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_ARGS_WARNING)
        try:
            _build(_ParseOnlyCLI, argv, run=subcommand is not None)
        except _Parsed as parsed:
            dumped = yaml.safe_load(parsed.parser.dump(parsed.config, skip_unset=False, skip_validation=True))
            return dumped if subcommand is None else dumped[subcommand]
    raise AssertionError("unreachable: _ParseOnlyCLI stops after parsing")


def short_message(err: BaseException) -> str:
    """The message of ``err``; jsonargparse's "does not validate against any of the Union subtypes" report is cut to
    its reasons (e.g. ``Parser key "model": ... Option 'accumulat' is not accepted``), without the given value."""
    text = str(err).strip()
    if "Does not validate against any of the Union subtypes" not in text or "Errors:" not in text:
        return text
    head = text.splitlines()[0]
    body = text.split("Errors:", 1)[1].split("Given value type:", 1)[0]
    reasons = [line.strip().lstrip("- ").strip() for line in body.splitlines() if line.strip()]
    reasons = [r for r in reasons if not r.startswith("Expected a <class 'NoneType'>")]
    return " ".join([head, *reasons])


def main() -> None:
    """``python main.py ...``: a user error is one line ``error: ...`` and exit status 2, never a traceback."""
    try:
        cli_main()
    except (UserError, ArgumentError) as err:
        if os.environ.get("ONESTEP_SR_TRACEBACK", "").strip() not in ("", "0"):
            raise
        print(f"error: {short_message(err)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
