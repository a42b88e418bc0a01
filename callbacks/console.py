"""What a run prints: a progress line in generator updates with the losses and s/step, a short model summary.

Training shows ``step 12/40  g_total 0.531  d_total 0.412  1.21 s/step  eta 0:00:34``: the step is
``trainer.global_step`` (generator optimizer updates) out of ``max_steps``, the losses are the last logged
``train/g_total`` and ``train/d_total``, s/step is the wall time per generator update over the last 20 updates
(the start-up of the first step excluded once there are two). Validation,
test and predict show the set and the batch count. On a terminal the line is redrawn in place; in a log file (not a
terminal) one line is printed every ``every_n_steps`` steps and at the end, so SLURM logs stay readable.
"""

from __future__ import annotations

import datetime
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.utilities import rank_zero_info
from tqdm import tqdm

__all__ = ["CompactModelSummary", "StepProgressBar"]


def _eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(seconds))))


class StepProgressBar(ProgressBar):
    """The run's progress in generator updates, its losses and speed (see the module docstring).

    Args:
        metrics: logged scalars shown beside the step (the last value logged).
        every_n_steps: steps between two printed lines when the output is not a terminal (default: the trainer's
            ``log_every_n_steps``).
        stream: where to write (default: standard output).
    """

    def __init__(self, metrics: Sequence[str] = ("train/g_total", "train/d_total"), every_n_steps: int | None = None,
                 stream: TextIO | None = None) -> None:
        super().__init__()
        self.metrics, self.every_n_steps, self._stream = tuple(metrics), every_n_steps, stream
        self._enabled = True
        self._bar: tqdm | None = None        # training
        self._eval_bar: tqdm | None = None   # validation, test, predict
        self._eval_total: int | None = None
        self._start_step, self._start_time, self._last_step, self._phase_start = 0, 0.0, -1, 0.0
        self._marks: deque[tuple[float, int]] = deque(maxlen=21)  # (time, step) of the latest step changes

    # ---------------------------------------------------------------------------------------------------- plumbing
    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    @property
    def interactive(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        text = " ".join(str(a) for a in args)
        if self._bar is not None or self._eval_bar is not None:
            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True, **kwargs)

    def _new_bar(self, desc: str, total: int | float | None, initial: int = 0, leave: bool = True,
                 position: int = 0) -> tqdm | None:
        if not (self._enabled and self.interactive):
            return None
        total = int(total) if total not in (None, float("inf")) else None
        return tqdm(desc=desc, total=total, initial=initial, leave=leave, position=position, file=self.stream,
                    dynamic_ncols=True, bar_format=self._format(""))

    @staticmethod
    def _format(text: str) -> str:
        """tqdm's bar format with ``text`` after the bar (tqdm's own postfix would start with a comma)."""
        return "{desc} {n_fmt}/{total_fmt} |{bar:24}| " + text.replace("{", "{{").replace("}", "}}")

    # ---------------------------------------------------------------------------------------------------- training
    def train_line(self, trainer: L.Trainer) -> str:
        """``step 12/40  g_total 0.531  d_total 0.412  1.21 s/step  eta 0:00:34`` for the current state."""
        step, total = trainer.global_step, trainer.max_steps if trainer.max_steps > 0 else None
        parts = [f"step {step}/{total if total else '?'}"]
        for name in self.metrics:
            value = trainer.callback_metrics.get(name)
            if value is not None:
                parts.append(f"{name.rsplit('/', 1)[-1]} {float(value):.4f}")
        parts.append(self.rate(trainer))
        return "  ".join(p for p in parts if p)

    def rate(self, trainer: L.Trainer) -> str:
        """``s/step`` over the latest steps (or since the start while there is only one) and the time left."""
        done = trainer.global_step - self._start_step
        if done <= 0:
            return ""
        if len(self._marks) >= 2 and self._marks[-1][1] > self._marks[0][1]:
            (t0, s0), (t1, s1) = self._marks[0], self._marks[-1]
            per_step = (t1 - t0) / (s1 - s0)
        else:
            per_step = (time.monotonic() - self._start_time) / done
        text = f"{per_step:.2f} s/step"
        if trainer.max_steps > 0:
            text += f"  eta {_eta(per_step * max(trainer.max_steps - trainer.global_step, 0))}"
        return text

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_step, self._last_step = trainer.global_step, trainer.global_step
        self._start_time = time.monotonic()
        self._marks.clear()
        total = trainer.max_steps if trainer.max_steps > 0 else None
        self._bar = self._new_bar("step", total, initial=trainer.global_step)
        if self._enabled and not self.interactive:
            resumed = f" (resumed at step {trainer.global_step})" if trainer.global_step else ""
            self.print(f"training: {total or '?'} steps (generator updates){resumed}")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._enabled or trainer.global_step == self._last_step:
            return
        step, self._last_step = trainer.global_step, trainer.global_step
        self._marks.append((time.monotonic(), step))
        if self._bar is not None:
            self._bar.n = step
            self._bar.bar_format = self._format(self.train_line(trainer).split("  ", 1)[-1])
            self._bar.refresh()
            if trainer.max_steps > 0 and step >= trainer.max_steps:  # done: Lightning's last words go below it
                self._bar.close()
                self._bar = None
            return
        every = self.every_n_steps or max(int(trainer.log_every_n_steps), 1)
        if step % every == 0 or step == trainer.max_steps:
            self.print(self.train_line(trainer))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ---------------------------------------------------------------------------------------------------- evaluation
    def _eval_start(self, trainer: L.Trainer, name: str, batches: Any) -> None:
        total = sum(b for b in (batches or []) if b != float("inf")) or None
        self._eval_total = total
        self._phase_start = time.monotonic()
        self._eval_bar = self._new_bar(name, total, leave=False, position=1 if self._bar is not None else 0)

    def _eval_batch(self, trainer: L.Trainer, batch: Any) -> None:
        if self._eval_bar is not None:
            names = batch.get("set") if isinstance(batch, dict) else None
            if names:
                self._eval_bar.bar_format = self._format(str(names[0] if isinstance(names, (list, tuple)) else names))
            self._eval_bar.update(1)

    def _eval_end(self, trainer: L.Trainer, verb: str, prefix: str | None) -> None:
        if self._eval_bar is not None:
            self._eval_bar.close()
            self._eval_bar = None
        if not self._enabled:
            return
        seconds = time.monotonic() - self._phase_start
        if verb == "validated" and self._marks:  # the speed of training steps leaves the validation out
            self._marks.clear()
            self._marks.append((time.monotonic(), trainer.global_step))
        where = f" at step {trainer.global_step}" if verb == "validated" else ""
        line = f"{verb}{where}: {self._eval_total or 0} batches in {seconds:.1f} s"
        if prefix:
            values = {k[len(prefix):]: float(v) for k, v in trainer.callback_metrics.items()
                      if k.startswith(prefix) and getattr(v, "numel", lambda: 1)() == 1}
            sets: dict[str, list[str]] = {}
            for key, value in values.items():
                dataset, _, metric = key.rpartition("/")
                sets.setdefault(dataset, []).append(f"{metric} {value:.4g}")
            line += "".join(f"\n  {dataset}: {'  '.join(items)}" for dataset, items in sets.items())
        self.print(line)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._eval_start(trainer, "validate", trainer.num_val_batches)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._eval_batch(trainer, batch)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._eval_end(trainer, "validated", "val/")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_start(trainer, "test", trainer.num_test_batches)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch(trainer, batch)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_end(trainer, "tested", None)  # the evaluation callback prints the test table

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_start(trainer, "predict", trainer.num_predict_batches)

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch(trainer, batch)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_end(trainer, "predicted", None)


class CompactModelSummary(ModelSummary):
    """The model's top-level parts with their parameter counts, and the trainable total, in a few lines (instead of
    Lightning's table with module modes and FLOPs)."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int,
                  **summarize_kwargs: Any) -> None:
        from lightning.pytorch.utilities.model_summary.model_summary import get_human_readable_count

        columns = dict(summary_data)
        names, types, params = columns.get("Name", []), columns.get("Type", []), columns.get("Params", [])
        width = max((len(n) for n in names), default=0)
        lines = [f"model: {get_human_readable_count(trainable_parameters)} trainable of "
                 f"{get_human_readable_count(total_parameters)} parameters ({model_size:.1f} MB)"]
        lines += [f"  {n:<{width}}  {p:>7}  {t}" for n, t, p in zip(names, types, params)]
        rank_zero_info("\n".join(lines))
