from tests.processes import clock, rq_worker, web_server  # noqa: F401  (fixtures)
