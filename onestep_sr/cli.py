"""The onestep-sr LightningCLI: ``python main.py {fit,validate,test,predict} --config configs/....yaml``."""

from __future__ import annotations

import sys
import warnings
from argparse import ArgumentError
from typing import Any

import yaml
from lightning.pytorch.cli import LightningCLI

from callbacks.prediction_writer import PredictionWriter
from datamodules import SRDataModule
from models.pretrained import MissingWeightsError, missing_weights_cause
from onestep_sr.config import ComposeError, expand_args

_ARGS_WARNING = "LightningCLI's args parameter is intended"  # raised whenever sys.argv is non-empty as well


class OneStepSRCLI(LightningCLI):
    """LightningCLI with TensorBoard by default, the resolved config saved next to every run and a PNG writer."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 - jsonargparse parser
        parser.add_lightning_class_args(PredictionWriter, "writer")

    def parse_arguments(self, parser, args) -> None:  # noqa: ANN001 - LightningCLI hook
        with warnings.catch_warnings():
            if isinstance(args, list) and args == expand_args(sys.argv[1:]):
                # main() passes the expanded command line: not the mistake this warning is about
                warnings.filterwarnings("ignore", message=_ARGS_WARNING)
            super().parse_arguments(parser, args)


def _build(cli_class: type[OneStepSRCLI], args: Any, run: bool) -> OneStepSRCLI:
    return cli_class(
        datamodule_class=SRDataModule,
        subclass_mode_model=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"exit_on_error": False},
        trainer_defaults={
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": "runs"}},
        },
        args=args,
        run=run,
    )


def cli_main(args: list[str] | None = None, run: bool = True) -> OneStepSRCLI:
    """Build (and with ``run``, run) the CLI; ``args`` default to ``sys.argv[1:]``. Composed configs (a ``compose:``
    key) are expanded into repeated ``--config`` first (:mod:`onestep_sr.config`)."""
    if args is None or isinstance(args, (list, tuple)):
        args = expand_args(sys.argv[1:] if args is None else args)
    try:
        return _build(OneStepSRCLI, args, run)
    except Exception as err:
        missing = missing_weights_cause(err)
        if missing is None or missing is err:
            raise
        raise missing from None


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


def main() -> None:
    try:
        cli_main()
    except (MissingWeightsError, ArgumentError, ComposeError) as err:
        # One clear message: a missing weight or a bad option, never a stack trace from inside a library.
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
