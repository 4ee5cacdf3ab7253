"""Generated bad input (hypothesis): every invalid request is refused with an E45xx code.

(Submitted to a real worker: tests/fleet/test_bad_input_submitted.py.)"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_client import InferenceRequest, ValidationError
from gateway_core.request import parse_request
from tests.bad_requests import FIELDS, json_values, requests, valid_base


@settings(max_examples=400, deadline=None)
@given(requests)
def test_parse_request_accepts_or_refuses_with_an_E45xx_code(data: dict[str, Any]) -> None:
    try:
        request = parse_request(data)
    except ValidationError as error:
        assert error.code.startswith("E45")
        return
    assert isinstance(request, InferenceRequest)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FIELDS), json_values)
def test_one_bad_field_in_a_good_request_is_refused_cleanly(field: str, value: Any) -> None:
    data = {**valid_base(), field: value}
    try:
        parse_request(data)
    except ValidationError as error:
        assert error.code.startswith("E45")
