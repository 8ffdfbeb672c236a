from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from tests.factories import UserFactory


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    cache.clear()  # throttle counters must not leak between tests


@pytest.fixture
def user(db: Any) -> Any:
    return UserFactory.create()


@pytest.fixture
def other_user(db: Any) -> Any:
    return UserFactory.create()


def jwt_client(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


@pytest.fixture
def api(user: Any) -> APIClient:
    return jwt_client(user)


@pytest.fixture
def other_api(other_user: Any) -> APIClient:
    return jwt_client(other_user)
