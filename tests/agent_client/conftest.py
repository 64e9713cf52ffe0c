from tests.processes import web_server  # noqa: F401  (fixture)
