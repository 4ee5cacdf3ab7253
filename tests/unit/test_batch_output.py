"""A batch's error lines: the status each one reports is the one the door answers its code with."""

from __future__ import annotations

import pytest

from gateway_client.batch.output import error_line
from gateway_core.errors import ERROR_CODES
from gateway_http.errors import STATUS_BY_CODE


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_an_error_line_reports_the_door_s_status_for_its_code(code: str) -> None:
    line = error_line("batch_1", "line-1", code, "why")
    assert line["response"]["status_code"] == STATUS_BY_CODE[code]
    assert line["error"] == {"code": code, "message": "why"}


def test_a_cancelled_line_is_a_conflict_not_a_rate_limit() -> None:
    # A line a cancel kept from running: E4405, which the door answers 409 (429 would tell a
    # reader of the error file to retry it later).
    assert error_line("batch_1", "a", "E4405", "batch cancelled")["response"]["status_code"] == 409
    assert error_line("batch_1", "b", "E4001", "unknown model")["response"]["status_code"] == 404
