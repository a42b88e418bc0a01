"""The onestep-sr LightningCLI: ``python main.py {fit,validate,test,predict} --config configs/....yaml``."""

from __future__ import annotations

import sys
from argparse import ArgumentError

from lightning.pytorch.cli import LightningCLI

from callbacks.prediction_writer import PredictionWriter
from datamodules import SRDataModule
from models.pretrained import MissingWeightsError, missing_weights_cause


class OneStepSRCLI(LightningCLI):
    """LightningCLI with TensorBoard by default, the resolved config saved next to every run and a PNG writer."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 - jsonargparse parser
        parser.add_lightning_class_args(PredictionWriter, "writer")


def cli_main(args: list[str] | None = None, run: bool = True) -> OneStepSRCLI:
    try:
        return OneStepSRCLI(
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
    except Exception as err:
        missing = missing_weights_cause(err)
        if missing is None or missing is err:
            raise
        raise missing from None


def main() -> None:
    try:
        cli_main()
    except (MissingWeightsError, ArgumentError) as err:
        # One clear message: a missing weight or a bad option, never a stack trace from inside a library.
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
