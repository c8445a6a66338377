"""Schemathesis hooks for tests/test_api_openapi.py (loaded with SCHEMATHESIS_HOOKS): every error
answer, from whichever service or the ingress, has Timbra's one error body."""

import schemathesis


@schemathesis.check
def timbra_error_body(ctx, response, case) -> None:  # noqa: ANN001, ARG001
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"{response.status_code} without a JSON body: {response.text[:200]!r}") from None
    if not (isinstance(body, dict) and set(body) == {"ok", "message", "code", "errors"} and body["ok"] is False
            and isinstance(body["message"], str) and isinstance(body["code"], str) and isinstance(body["errors"], list)):
        raise AssertionError(f"{response.status_code} not in the error format {{ok, message, code, errors}}: {str(body)[:300]}")
