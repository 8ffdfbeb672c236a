"""The OpenAPI schema is valid, and a bounded fuzz of every operation finds no 5xx."""

from __future__ import annotations

import io

import pytest
import schemathesis
from django.core.management import call_command
from hypothesis import HealthCheck, settings
from rest_framework_simplejwt.tokens import RefreshToken
from schemathesis.checks import not_a_server_error

from config.wsgi import application
from tests.factories import BotFactory, UserFactory, make_credential

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)


def test_openapi_schema_validates_without_warnings(db):
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    assert "openapi: 3.0" in out.getvalue()
    for path in ("/api/credentials/", "/api/bots/", "/api/auth/token/", "/api/bots/{id}/pause/"):
        assert f"  {path}:" in out.getvalue()


def test_schema_documents_secrets_as_write_only(db):
    out = io.StringIO()
    call_command("spectacular", "--format", "openapi-json", stdout=out)
    import json

    components = json.loads(out.getvalue())["components"]["schemas"]
    assert "api_secret" in components["ApiCredentialRequest"]["properties"]
    assert "api_secret" not in components["ApiCredential"]["properties"]
    assert "api_key" not in components["ApiCredential"]["properties"]


@pytest.fixture
def _keep_test_connection():
    """Raw WSGI calls would close the test transaction's connection at each request boundary;
    Django's own test client disconnects the same handlers."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def auth_headers(db, _keep_test_connection):
    user = UserFactory.create()
    credential = make_credential(owner=user)
    BotFactory.create(owner=user, credential=credential)
    return {"Authorization": f"Bearer {RefreshToken.for_user(user).access_token}"}


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_fuzz_finds_no_server_error(case, auth_headers):
    response = case.call(headers=auth_headers)
    case.validate_response(response, checks=[not_a_server_error])
