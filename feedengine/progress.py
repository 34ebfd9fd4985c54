"""The replay progress bar: tqdm on a terminal, with log lines printed above it."""

import contextlib
import sys
from collections.abc import Iterator

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from feedengine.pipeline import Pipeline
from feedengine.replay import ReplaySource


class ReplayProgress:
    """Bytes of the tick file consumed, and ticks per second; called after every batch.

    Parameters
    ----------
    source, pipeline
        What to report on.
    """

    def __init__(self, source: ReplaySource, pipeline: Pipeline) -> None:
        self.source = source
        self.pipeline = pipeline
        self.bar = tqdm(
            total=source.reader.size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=source.reader.path.name,
            file=sys.stderr,
            dynamic_ncols=True,
            # Redraws cost a syscall each: 5 a second is smooth and free.
            mininterval=0.2,
        )

    def __call__(self) -> None:
        self.bar.update(self.source.bytes_read - self.bar.n)
        self.bar.set_postfix_str(f"{self.pipeline.summary.ticks:,} ticks", refresh=False)

    def close(self) -> None:
        self()
        self.bar.close()


@contextlib.contextmanager
def replay_progress(source: ReplaySource, pipeline: Pipeline) -> Iterator[None]:
    """Show a progress bar during the ``with`` block when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield
        return
    progress = ReplayProgress(source, pipeline)
    pipeline.on_batch = progress
    try:
        with logging_redirect_tqdm():
            yield
    finally:
        pipeline.on_batch = None
        progress.close()
