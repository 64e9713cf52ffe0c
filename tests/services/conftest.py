"""Service-level fixtures: principals resolved from the personas' keys, inside an app context."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from flask import Flask

from app.services.auth import authenticate_key
from app.services.principal import Principal
from tests.conftest import Personas


@dataclass
class Actors:
    client: Principal
    other_client: Principal
    fleet: Principal
    admin: Principal


@pytest.fixture
def actors(app_ctx: Flask, personas: Personas) -> Actors:
    return Actors(
        client=authenticate_key(personas.client.key),
        other_client=authenticate_key(personas.other_client.key),
        fleet=authenticate_key(personas.fleet.key),
        admin=authenticate_key(personas.admin.key),
    )
