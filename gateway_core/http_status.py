"""The HTTP status each error code is answered with: by the door (``gateway_http/errors.py``),
which picks the ones the official SDKs map to their exception classes, and in a batch's error
file (``gateway_client/batch/output.py``), so that a line reports what the same request sent to
the door would have got.
"""

from __future__ import annotations

#: Status by code; a code missing here (none today: a test checks the table) answers 502.
STATUS_BY_CODE: dict[str, int] = {
    "E4000": 503,
    "E4001": 404,
    "E4002": 503,  # the provider has no key, URL or executable: the operator's to fix
    "E4003": 503,
    "E4004": 503,
    "E4005": 404,  # disabled in the catalog: not served, as an unknown model
    "E4100": 400,
    "E4101": 400,
    "E4102": 503,
    "E4103": 400,
    "E4104": 400,
    "E4200": 502,
    "E4201": 502,
    "E4202": 502,
    "E4203": 502,
    "E4205": 504,
    "E4206": 502,
    "E4300": 502,
    "E4301": 502,
    "E4400": 503,
    "E4401": 429,
    "E4402": 429,
    "E4403": 503,
    "E4404": 504,
    "E4405": 409,  # cancelled by someone else: a request with its Idempotency-Key, a batch cancel
    "E4406": 404,
    "E4407": 503,
    "E4408": 401,
    "E4409": 403,
    "E4500": 400,
    "E4501": 400,
    "E4502": 400,
    "E4503": 400,
    "E4600": 502,
    "E4604": 502,
    "E4701": 503,
    "E4702": 503,
}
