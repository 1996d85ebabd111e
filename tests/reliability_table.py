"""Print the bad-input matrix with the message each entry actually produces (for docs/reliability.md).

    .venv/bin/python -m tests.reliability_table > /tmp/table.md
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from pathlib import Path

from bertpress.app.cli import main
from bertpress.errors import BertpressError
from bertpress.testing import save_tiny_checkpoint, write_tiny_dataset
from tests.test_bad_inputs import CASES, Ctx


def run() -> None:
    with tempfile.TemporaryDirectory() as d:
        base = Path(d)
        ckpt = save_tiny_checkpoint(base / "ckpt")
        data = write_tiny_dataset(base / "data")
        print("| entry | exit | message (paths shortened) |")
        print("|---|---|---|")
        for i, (name, build, _) in enumerate(CASES):
            tmp = base / f"case{i}"
            tmp.mkdir()
            ctx = Ctx(tmp, ckpt, data)
            err = io.StringIO()
            home = os.getcwd()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                argv = build(ctx)
                if ctx.cwd is not None:
                    os.chdir(ctx.cwd)
                try:
                    if callable(argv):  # a Python API entry: the exception's message
                        try:
                            argv()
                            code = 0
                        except BertpressError as exc:
                            print(f"error: {exc}", file=sys.stderr)
                            code = "raises"
                    else:
                        code = main(argv)
                except SystemExit as exc:
                    code = exc.code
                finally:
                    os.chdir(home)
            lines = [ln for ln in err.getvalue().splitlines() if ln.startswith(("error:", "  - "))]
            msg = " ".join(ln.strip() for ln in lines)
            msg = re.sub(r"/\S*/case\d+/", "…/", msg).replace("|", "\\|")
            print(f"| `{name}` | {code} | {msg[:260]} |")


if __name__ == "__main__":
    run()
