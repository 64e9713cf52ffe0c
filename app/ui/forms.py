"""The base of the console's POST forms: a service's InvalidInput shown at its fields."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm

from app.services.errors import InvalidInput


class ServiceForm(FlaskForm):
    """A form whose input a service checks again: what it refuses is shown under the field
    it names, or above the form (``general_errors``) when it names none of the form's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.general_errors: list[str] = []

    def take_errors(self, exc: InvalidInput) -> None:
        """A service's InvalidInput, shown under the field it names."""
        for detail in exc.details or [{"field": None, "message": exc.message}]:
            name, message = detail.get("field"), detail.get("message", exc.message)
            if name in self._fields and name != "csrf_token":
                self[name].errors = [*self[name].errors, message]
            else:
                self.general_errors.append(exc.message)

    @property
    def failed(self) -> bool:
        return bool(self.errors or self.general_errors)
