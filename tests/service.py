"""`specc serve` started for real by the tests: a subprocess on 127.0.0.1 with a free port (`--port 0`; the port
is read from the line the command prints once every model is warmed), stopped with SIGTERM at the end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Service:
    url: str  # http://127.0.0.1:PORT
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as a process manager stops it; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@contextmanager
def service(*args: str | Path, timeout: float = 240, ready: str = r"ready on (http://\S+)") -> Iterator[Service]:
    """`specc serve ARGS --port 0`, once it says it is ready."""
    with tempfile.TemporaryDirectory(prefix="specc-serve-") as tmp:
        log = Path(tmp) / "serve.log"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "specc", "serve", *map(str, args), "--port", "0"],
                                    stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                                    env={**os.environ, "PYTHONPATH": str(ROOT)})
        s = Service("", proc, log)
        try:
            deadline = time.monotonic() + timeout
            while True:
                found = re.search(ready, s.output())
                if found:
                    s.url = found.group(1)
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"specc serve did not become ready (exit {proc.poll()}):\n{s.output()}")
                time.sleep(0.1)
            yield s
        finally:
            s.stop()
