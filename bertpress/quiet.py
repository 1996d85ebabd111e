"""Library quietness, in one place.

The libraries we drive are chatty in ways that break our contract of one-line errors and clean
`--json` output: transformers warns about heads it initialises and (5.x) draws load/save progress
bars on stderr, ONNX Runtime's optimizer and quantizer log advice, the exporters emit tracer
warnings, the Trainer prints a dict per logging step. `quiet()` silences that expected noise for a
block without hiding errors; `quiet_libraries()` sets the process-wide defaults the CLI wants once
at start-up; `quiet_trainer()` keeps a Trainer's progress bar and drops its printed dicts.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Iterator

# Loggers whose INFO/WARNING output is expected noise while we export, optimize and quantize.
NOISY_LOGGERS = ("onnxruntime", "onnxruntime.transformers", "onnxruntime.quantization", "optimum",
                 "torch.onnx", "root", "")


def quiet_libraries() -> None:
    """Process-wide: transformers logs errors only and draws no progress bars, datasets too."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        if hasattr(hf_logging, "disable_progress_bar"):
            hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    with contextlib.suppress(ImportError):
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


@contextlib.contextmanager
def quiet(*, stdout: bool = False) -> Iterator[None]:
    """Silence library logging (below ERROR), Python warnings and transformers' verbosity for
    the block; with stdout=True also swallow what libraries print (Optimum prints progress)."""
    saved = {n: logging.getLogger(n).level for n in NOISY_LOGGERS}
    for n in NOISY_LOGGERS:
        logging.getLogger(n).setLevel(logging.ERROR)
    hf_logging = None
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging
    verbosity = hf_logging.get_verbosity() if hf_logging else None
    bars = bool(hf_logging and getattr(hf_logging, "is_progress_bar_enabled", lambda: False)())
    if hf_logging:
        hf_logging.set_verbosity_error()
        if bars:  # 5.x draws "Loading weights" bars on stderr
            hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings(), \
                (contextlib.redirect_stdout(io.StringIO()) if stdout else contextlib.nullcontext()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)
        if hf_logging and verbosity is not None:
            hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def quiet_trainer(trainer, progress: bool) -> None:
    """A Trainer that prints no log dicts: PrinterCallback (no progress bar) and ProgressCallback's
    `on_log` (with one: `tqdm.write` of every dict, between our lines and under the search's bar)
    both go; the bar itself stays when `progress`. Fine-tuning, recovery and padding comparisons
    all build their Trainers through this."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class QuietProgress(ProgressCallback):
        """The Trainer's progress bars without its printed log dicts."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if progress:
        trainer.add_callback(QuietProgress())
