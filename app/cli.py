"""The `bertpress` command line (also `python -m bertpress`).

A thin layer over the Python API. Each stage package contributes its subcommand through a
light `cli.py` module with `register(subparsers, common)`; heavy imports happen inside the
handlers so `--help` is instant. Any `BertpressError` becomes one line on stderr and exit
code 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import traceback
from typing import Any, Callable, Sequence

from bertpress import __version__
from bertpress.app.inspect import inspect_path, inspect_text
from bertpress.console import print_json
from bertpress.errors import BertpressError, Terminated, is_disk_full, raise_on_sigterm
from bertpress.hardware import info, info_text
from bertpress.quiet import quiet_libraries

# Subcommand modules, in the order `--help` lists them. A module is listed only once it exists
# and does the real thing.
COMMAND_MODULES = (
    "bertpress.finetune.cli",
    "bertpress.compress.cli",
    "bertpress.export.cli",
    "bertpress.bench.cli",
    "bertpress.app.pipeline_cli",
)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with our error format: one line naming the problem and where help is, exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def common_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show full tracebacks on errors")
    return p


def _cmd_info(args: argparse.Namespace) -> int:
    data = info()
    print_json(data) if args.json else print(info_text(data))
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    data = inspect_path(args.path)
    print_json(data) if args.json else print(inspect_text(data))
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = common_parent()
    parser = _Parser(
        prog="bertpress",
        description="Take BERT text classifiers from training to the edge: "
                    "finetune -> compress -> export -> bench.",
        formatter_class=_Formatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"bertpress {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("info", parents=[common], formatter_class=_Formatter,
                       help="versions, CPU model and ISA flags (AVX2/AVX-512/VNNI/AMX), threads, CUDA devices")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=_cmd_info)

    p = sub.add_parser("inspect", parents=[common], formatter_class=_Formatter,
                       help="show an artifact's manifest, architecture, parameters, heads/FFN per layer, size")
    p.add_argument("path", help="artifact directory, HF model directory, .onnx or .pt file")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=_cmd_inspect)

    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(sub, common, _Formatter)
    parser.set_defaults(deploy_runtimes=_deploy_runtimes)  # what `compress` hands its search
    return parser


def _deploy_runtimes() -> dict[str, Any]:
    """The search's deploy runtimes (compress cannot import export; the composition root passes them)."""
    from bertpress.app.search_runtimes import DEPLOY_RUNTIMES  # lazy: exports pull torch; --help stays light

    return DEPLOY_RUNTIMES


def run_handler(handler: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    try:
        code = handler(args)
        return 0 if code is None else int(code)
    except BertpressError as exc:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `bertpress info | head`: the reader left, which is fine
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (errors.Terminated): staging is already cleaned
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"error: {what}; outputs were not finished (re-run to complete)", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    except Exception as exc:  # a full disk outside a staged output (e.g. a Trainer checkpoint), any wrapper
        if not is_disk_full(exc):
            raise
        if getattr(args, "debug", False):
            traceback.print_exc()
        where = getattr(exc, "filename", None) or "the output"
        print(f"error: {where}: the disk is full (no space left on device); free some space or write to "
              "another disk", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    quiet_libraries()  # no library progress bars or warnings between our one-line messages
    previous = raise_on_sigterm()  # SIGTERM cleans up like Ctrl-C and exits 143
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return run_handler(args.handler, args)
    finally:
        if previous is not None:  # in-process callers (tests) get their own handler back
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
