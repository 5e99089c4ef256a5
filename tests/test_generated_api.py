"""Property tests generated from the OpenAPI document (Schemathesis), as each role.

For every operation, Schemathesis generates requests from the documented parameters and
bodies, valid ones and (in a second pass) ones that break the schema; each is sent through
the real application on the real database with the role's key. Every answer must be: no 5xx,
a documented status code and content type, a body matching the documented schema, and every
error in the one error shape. The number of examples is bounded so the whole run stays short;
`ECHOLEDGER_SCHEMATHESIS_EXAMPLES` raises it for a longer hunt.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.engine import Engine

from app.config import Settings
from app.main import create_app
from tests.factories import Tenant, Tenants, audio_file, submit_check, upload

EXAMPLES = int(os.environ.get("ECHOLEDGER_SCHEMATHESIS_EXAMPLES", "4"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Transport options meant for `requests` that the test client does not take.
_REQUESTS_ONLY = ("verify", "timeout", "allow_redirects", "cert", "proxies", "stream")


def _one_error_shape(response: Any) -> None:
    if response.status_code < 400:
        return
    body = response.json()
    assert set(body) == {"error"}, response.text
    assert set(body["error"]) == {"code", "message", "details", "request_id"}, response.text
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]


def _part(part: tuple[str, Any]) -> tuple[str, Any]:
    """A multipart part the test client can encode (generated values may be numbers)."""
    name, value = part
    if isinstance(value, tuple):
        filename, content, *rest = value
        if not isinstance(content, str | bytes):
            content = json.dumps(content)
        return name, (filename, content, *rest)
    return name, value if isinstance(value, str | bytes) else json.dumps(value)


def _exercise(
    client: TestClient, caller: Tenant, mode: GenerationMode, ids: dict[str, str]
) -> list[str]:
    spec = client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],  # report, do not shrink: keeps it short
        )
        def send(case: Any) -> None:
            if mode is GenerationMode.POSITIVE and case.path_parameters:
                # Real objects, so the generated bodies and queries reach the database
                # instead of stopping at a 404 (the `version` number stays generated).
                for name in case.path_parameters:
                    if name in ids:
                        case.path_parameters[name] = ids[name]
            kwargs = case.as_transport_kwargs(base_url="http://testserver")
            # Schemathesis also generates Authorization values from the security scheme;
            # each role's own key is what this test is about (bad keys: test_limits).
            kwargs["headers"] = {
                k: v for k, v in kwargs["headers"].items() if k.lower() != "authorization"
            } | caller.headers
            for option in _REQUESTS_ONLY:
                kwargs.pop(option, None)
            if kwargs.get("files"):
                kwargs["files"] = [_part(part) for part in kwargs["files"]]
            if not kwargs.get("cookies"):
                kwargs.pop("cookies", None)
            response = client.request(**kwargs)
            response.request.read()  # a streamed multipart body, for the checks to see
            if mode is GenerationMode.POSITIVE:
                case.validate_response(response, checks=CHECKS)
            else:
                # Broken input may be refused with any 4xx; it still must not be a 5xx.
                case.validate_response(response, checks=[not_a_server_error])
            _one_error_shape(response)

        try:
            send()
        except Unsatisfiable:
            # No way to break the schema of an operation that takes nothing.
            if mode is GenerationMode.POSITIVE:
                raise
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {exc}"[:3000])
    return failures


def _objects(client: TestClient, tenants: Tenants, caller: Tenant, tmp: Path) -> dict[str, str]:
    """Real ids for the path parameters: the caller's own where it has them, else a label's
    catalogue and track and a company's check; `key_id` is a spare key of the caller's (so
    revoking it does not lock the test out)."""
    label = caller if caller.kind.value == "label" else tenants.label()
    company = caller if caller.kind.value == "ai_company" else tenants.ai_company()
    catalogue = tenants.catalogue(label)
    track = upload(client, label, catalogue["id"], audio_file(tmp, seed=1, seconds=3.0)).json()
    check = submit_check(client, company, audio_file(tmp, seed=2, seconds=3.0)).json()
    spare = client.post("/v1/keys", json={"name": "spare"}, headers=caller.headers).json()
    return {
        "org_id": str(caller.id),
        "key_id": spare["id"],
        "catalogue_id": catalogue["id"],
        "track_id": track["id"],
        "check_id": check["id"],
    }


@pytest.mark.slow
@pytest.mark.parametrize("role", ["operator", "label", "ai_company", "auditor"])
def test_generated_requests_hold_the_contract(
    settings: Settings, engine: Engine, role: str, tmp_path: Path
) -> None:
    # Rate limits high enough that a 429 (documented, and tested in test_limits) never hides
    # what the generated request would have got.
    roomy = settings.model_copy(
        update={"rate_limit_checks_per_minute": 1e6, "rate_limit_uploads_per_minute": 1e6}
    )
    with TestClient(create_app(roomy)) as client:
        tenants = Tenants(client, engine)
        caller = tenants.operator() if role == "operator" else tenants.create(role)
        ids = _objects(client, tenants, caller, tmp_path)
        failures = _exercise(client, caller, GenerationMode.POSITIVE, ids)
        failures += _exercise(client, caller, GenerationMode.NEGATIVE, ids)
    assert not failures, "\n\n".join(failures)
