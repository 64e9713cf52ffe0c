"""Small helpers that import nothing of the app."""
