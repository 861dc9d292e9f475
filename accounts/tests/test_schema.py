"""OpenAPI: the auth endpoints are documented without a single drf-spectacular warning."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import include, path
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

AUTH_PATHS = ["/api/v1/auth/token", "/api/v1/auth/token/refresh", "/api/v1/auth/logout", "/api/v1/auth/devices/redeem"]


def test_auth_endpoints_generate_a_valid_schema_without_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    GENERATOR_STATS.reset()
    generator = SchemaGenerator(patterns=[path("api/v1/auth/", include("accounts.api_urls"))])
    schema = generator.get_schema(request=None, public=True)
    validate_schema(schema)
    assert not GENERATOR_STATS, capsys.readouterr().err
    assert sorted(schema["paths"]) == sorted(AUTH_PATHS)
    token = schema["paths"]["/api/v1/auth/token"]["post"]
    assert set(token["responses"]) == {"200", "400", "401", "429"}
    assert not any("jwtAuth" in scheme for scheme in token.get("security", []))  # public: no credentials
    redeem = schema["paths"]["/api/v1/auth/devices/redeem"]["post"]["responses"]["200"]
    ref = redeem["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(schema["components"]["schemas"][ref]["properties"]) == {"access", "refresh", "scope", "device_id"}


@pytest.mark.django_db
def test_the_served_schema_documents_the_bearer_scheme(client: Any, friend: Any) -> None:
    client.force_login(friend)
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert set(AUTH_PATHS) <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["jwtAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
    }
    assert client.get("/api/docs/").status_code == 200


@pytest.mark.django_db
def test_schema_and_docs_are_for_signed_in_users_only(client: Any, friend: Any) -> None:
    """Issue 18 point 4: strangers reach only login, health and static files; the API map is not for them."""
    assert client.get("/api/schema/").status_code == 401
    docs = client.get("/api/docs/")
    assert docs.status_code == 302 and docs["Location"].startswith("/accounts/login")
    assert client.get("/api/docs/?script=").status_code == 302


@pytest.mark.django_db
def test_the_docs_page_loads_no_script_from_outside_the_server(client: Any, friend: Any) -> None:
    import re

    client.force_login(friend)
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    sources = re.findall(r"<(?:script|link)[^>]+(?:src|href)=\"([^\"]+)\"", html)
    assert sources, html[:500]
    outside = [s for s in sources if s.startswith(("http:", "https:", "//"))]
    assert not outside, outside
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script: the CSP would block it"
    from django.conf import settings
    from django.contrib.staticfiles import finders

    for src in sources:  # every one is ours: a static file we ship, or the page's own init script
        if src.startswith(settings.STATIC_URL):
            assert finders.find(src.removeprefix(settings.STATIC_URL).split("?")[0]), src
        else:
            assert client.get(src).status_code == 200, src
