"""Progress of a long loop, counted in what it makes (samples, steps, tokens), with rate and ETA.

One helper for every job: training (stage 1 and 2), prior sampling, evaluation, encoding.
On a terminal (``sys.stderr.isatty()``) it draws a tqdm bar; otherwise (a log file, a Ray
job's driver log, a test) it writes one line every ``interval`` seconds::

    train: 120/500 steps (24%), 960 samples, 31.2 samples/s, elapsed 0:00:31, ETA 0:01:38, loss=0.41

A loop that ends before the first interval writes nothing (fast calls stay quiet); one that wrote
interval lines writes a last line when it closes. Lines go to the ``latentflow.progress`` logger
when logging is configured (the jobs configure it), else straight to stderr.

Example::

    with Progress(total=max_steps, desc="train", unit="step") as bar:
        for step in range(max_steps):
            ...
            bar.update(1, samples=len(batch), loss=float(loss))
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Callable

from latentflow.errors import ConfigError

logger = logging.getLogger("latentflow.progress")

MODES = ("auto", "bar", "log", "off")
DEFAULT_INTERVAL_S = 10.0
# LATENTFLOW_PROGRESS=auto|bar|log|off and LATENTFLOW_PROGRESS_INTERVAL=<seconds> set the defaults
# of every job's progress (e.g. off in a notebook, 60 s in a CI log)
MODE_ENV, INTERVAL_ENV = "LATENTFLOW_PROGRESS", "LATENTFLOW_PROGRESS_INTERVAL"


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (``?`` when unknown)."""
    if seconds != seconds or seconds == float("inf") or seconds < 0:  # NaN, inf
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _emit(line: str) -> None:
    if logger.hasHandlers():
        logger.info(line)
    else:
        print(line, file=sys.stderr, flush=True)


class Progress:
    """A progress counter with rate and ETA: a tqdm bar on a terminal, a log line per interval otherwise.

    Args:
        total: units in the whole loop (None: unknown, no percentage or ETA).
        desc: what runs (``train``, ``sample``, ``evaluate``); leads every line.
        unit: what ``update`` counts (``step``, ``token``, ``sample``).
        mode: ``auto`` (a bar when stderr is a terminal, else lines), ``bar``, ``log`` or ``off``;
            None: ``$LATENTFLOW_PROGRESS``, else ``auto``. ``off`` here wins over the variable.
        interval: seconds between log lines (``log`` mode); None: ``$LATENTFLOW_PROGRESS_INTERVAL``, else 10.
        initial: units already done (a resumed run); the rate counts only this run's.
        emit: where log lines go (default: the ``latentflow.progress`` logger, else stderr).

    ``update(n, samples=k, **postfix)`` adds ``n`` units and ``k`` samples (shown with their rate
    when the unit is not itself samples); other keywords are shown as ``key=value``.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "sample", mode: str | None = None,
                 interval: float | None = None, initial: int = 0, emit: Callable[[str], None] | None = None):
        mode = mode or os.environ.get(MODE_ENV) or "auto"
        interval = interval if interval is not None else float(os.environ.get(INTERVAL_ENV) or DEFAULT_INTERVAL_S)
        if mode not in MODES:
            raise ConfigError(f"progress mode must be one of {list(MODES)}, got: {mode!r}")
        if interval <= 0:
            raise ConfigError(f"progress interval must be > 0, got: {interval}")
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.total, self.desc, self.unit, self.mode, self.interval = total, desc, unit, mode, interval
        self.n, self.initial, self.samples = initial, initial, 0
        self.postfix: dict[str, Any] = {}
        self.lines = 0  # log lines written
        self._logged_n = initial  # units done at the last line
        self._emit = emit or _emit
        self._t0 = self._last = time.monotonic()
        self._bar = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)

    # ---- counting -------------------------------------------------------------------
    def update(self, n: int = 1, samples: int = 0, **postfix: Any) -> None:
        """``n`` more units done (and ``samples`` more samples); ``postfix`` values are shown."""
        self.n += n
        self.samples += samples
        self.postfix.update(postfix)
        if self._bar is not None:
            self._bar.update(n)
            if postfix or samples:
                self._bar.set_postfix(self._shown(), refresh=False)
        elif self.mode == "log" and time.monotonic() - self._last >= self.interval:
            self._log()

    def _shown(self) -> dict[str, Any]:
        shown = dict(self.postfix)
        if self.samples and self.unit != "sample":
            shown["samples"] = self.samples
            shown["samples/s"] = f"{self.samples / self.elapsed:.1f}"
        return {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in shown.items()}

    # ---- figures --------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self._t0, 1e-9)

    @property
    def rate(self) -> float:
        """Units per second in this run."""
        return (self.n - self.initial) / self.elapsed

    @property
    def eta(self) -> float:
        """Seconds left at this run's rate (NaN when unknown)."""
        if self.total is None or self.rate <= 0:
            return float("nan")
        return max(self.total - self.n, 0) / self.rate

    def line(self) -> str:
        """``desc: n/total unit (p%), rate, elapsed, ETA, key=value ...``."""
        units = self.unit if self.unit.endswith("s") else self.unit + "s"
        done = f"{self.n:,}/{self.total:,} {units} ({100 * self.n / max(self.total, 1):.0f}%)" if self.total else f"{self.n:,} {units}"
        parts = [done]
        if self.samples and self.unit != "sample":
            parts.append(f"{self.samples:,} samples, {self.samples / self.elapsed:.1f} samples/s")
        parts.append(f"{self.rate:.3g} {units}/s")
        parts.append(f"elapsed {format_duration(self.elapsed)}")
        if self.total:
            parts.append(f"ETA {format_duration(self.eta)}")
        parts += [f"{k}={v}" for k, v in self._shown().items() if k not in ("samples", "samples/s")]
        return f"{self.desc}: " + ", ".join(parts)

    def _log(self) -> None:
        self._emit(self.line())
        self.lines += 1
        self._last, self._logged_n = time.monotonic(), self.n

    # ---- the end --------------------------------------------------------------------
    def close(self) -> None:
        """Close the bar; in log mode, a last line when the loop wrote any (fast loops stay quiet)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "log" and self.lines and self.n != self._logged_n:
            self._log()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["Progress", "format_duration", "MODES", "DEFAULT_INTERVAL_S"]
