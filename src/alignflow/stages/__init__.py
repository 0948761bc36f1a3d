"""One module per DVC stage. Each has a pure core, `run(cfg)` for I/O, and `main()` for dvc.yaml."""

from __future__ import annotations

import logging
from typing import Callable


def stage_main(run: Callable, expected: tuple[type[BaseException], ...] = ()) -> None:
    """What dvc.yaml calls: plain logging, params from params.yaml, then `run`.

    An expected failure (bad input, a failed expectation, a non-finite loss) ends the process with its
    message and a non-zero status, without a traceback; anything else is a bug and keeps its traceback.
    """
    from alignflow import config

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(config.load())
    except (config.ConfigError, *expected) as exc:
        raise SystemExit(f"{run.__module__.rsplit('.', 1)[-1]}: {exc}") from None
