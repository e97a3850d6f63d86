"""Training log output: bare lines on stderr from rank 0, only warnings (with the rank) from the others."""

import logging

import pytest

from training.logs import _StderrHandler, configure_logging


@pytest.fixture
def training_logger():
    logger = logging.getLogger("training")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def test_rank_zero_prints_info_bare_other_ranks_only_warnings(training_logger, capsys):
    log = logging.getLogger("training.trainer")
    configure_logging(rank=0)
    log.info("[train] resumed x")
    assert capsys.readouterr().err == "[train] resumed x\n"
    configure_logging(rank=1)  # idempotent: still one handler, now for rank 1
    # (pytest may attach its own capture handlers too; ours is there once)
    assert sum(isinstance(h, _StderrHandler) for h in training_logger.handlers) == 1
    log.info("[val] epoch 1")
    log.warning("[train] skipping the picture")
    assert capsys.readouterr().err == "[rank 1] [train] skipping the picture\n"
