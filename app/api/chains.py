"""Task chains (seed 003 shapes). Being built: see issue 5."""

from __future__ import annotations
