"""A failed start-up is one line: in the readiness reason, ``Runtime.error`` and the log (the
traceback only at debug level); `clipsearch serve` exits with it (tests/e2e/test_startup.py)."""

from __future__ import annotations

import logging

import pytest

from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType
from service.gateway.state import Components, Runtime


def _failing(exc: Exception) -> Runtime:
    def factory(settings: Settings) -> Components:
        raise exc

    return Runtime(Settings(), factory)


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (
            ClipsearchError(ErrorType.bundle_invalid, "bundle x: bad\n  manifest"),
            "bundle x: bad manifest",
        ),
        (RuntimeError("model file\nvanished"), "RuntimeError: model file vanished"),
        (KeyError("spaces"), "KeyError: 'spaces'"),
        (OSError(), "OSError"),
    ],
)
def test_a_failed_start_up_is_one_line(
    exc: Exception, line: str, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = _failing(exc)
    assert runtime.error is None  # not failed while it has not started
    with caplog.at_level(logging.INFO, logger="service.gateway.state"):
        runtime.start()
        assert runtime.wait(10) is False
    assert runtime.error == line
    assert runtime.readiness() == (False, {"reason": f"start-up failed: {line}"})
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == f"start-up failed: {line}" and record.exc_info is None
    with pytest.raises(ClipsearchError, match="service failed to start"):
        _ = runtime.components
    runtime.close()


def test_the_traceback_is_kept_for_debugging(caplog: pytest.LogCaptureFixture) -> None:
    runtime = _failing(RuntimeError("boom"))
    with caplog.at_level(logging.DEBUG, logger="service.gateway.state"):
        runtime.start()
        runtime.wait(10)
    assert [r.exc_info is not None for r in caplog.records if r.levelno == logging.DEBUG] == [True]
    runtime.close()
