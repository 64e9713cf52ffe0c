import json
from tests.conftest import Api, Personas

def test_probe(api: Api, personas: Personas) -> None:
    c = personas.client
    for depth in (50, 200, 600, 900, 990, 5000, 100000):
        body = '{"task_type":"r","capability_required":"report-v1","input_data":' + '{"a":' * depth + '1' + '}' * depth + '}'
        r = api.post("/ains/tasks", c, data=body, content_type="application/json")
        print("depth", depth, r.status_code, r.get_data()[:150])
    for s in ["\u0000", "a\u0000b", "😀", "\ud800", "\uffff", "e\u0301"]:
        for field in ("task_type", "input_data"):
            payload = {"task_type": "r", "capability_required": "report-v1"}
            if field == "input_data":
                payload["input_data"] = {"k": s, s: 1}
            else:
                payload[field] = s
            r = api.post("/ains/tasks", c, data=json.dumps(payload), content_type="application/json")
            print(repr(s), field, r.status_code, r.get_data()[:200])
    r = api.post("/ains/tasks", c, data=b"x" * (1024 * 1024), content_type="application/json")
    print("1MB", r.status_code, r.get_data()[:200], r.headers)
    r = api.post("/ains/tasks", c, data=b"\xff\xfe", content_type="application/json")
    print("badutf8", r.status_code, r.get_data()[:200])
    r = api.post("/ains/tasks", c, data=b"[]", content_type="application/json")
    print("array", r.status_code, r.get_data()[:200])
    r = api.post("/ains/tasks", c, data=b"{}", content_type="text/plain")
    print("textplain", r.status_code, r.get_data()[:200])
    r = api.post("/ains/tasks", c, data=b"NaN", content_type="application/json")
    print("nan", r.status_code, r.get_data()[:200])
    r = api.post("/ains/tasks", c, data=b'{"task_type":"r","capability_required":"report-v1","input_data":{"x":NaN}}', content_type="application/json")
    print("nan in input", r.status_code, r.get_data()[:300])
    r = api.post("/ains/tasks", c, data=b'{"task_type":"r","capability_required":"report-v1","input_data":{"x":1e999}}', content_type="application/json")
    print("inf in input", r.status_code, r.get_data()[:300])
    r = api.post("/ains/tasks", c, data=b'{"task_type":"r","capability_required":"report-v1","priority":1e400}', content_type="application/json")
    print("prio inf", r.status_code, r.get_data()[:300])
    r = api.post("/ains/tasks", c, data=b'{"task_type":"r","capability_required":"report-v1","priority":99999999999999999999999999}', content_type="application/json")
    print("prio big", r.status_code, r.get_data()[:300])
    r = api.post("/ains/tasks", c, data=b'{"task_type":"r","capability_required":"report-v1","input_data":{"x":99999999999999999999999999}}', content_type="application/json")
    print("big int in input", r.status_code, r.get_data()[:300])
    r = api.post("/ains/tasks", c, data=b'{"task_type":"r","capability_required":"report-v1","priority":true}', content_type="application/json")
    print("prio bool", r.status_code, r.get_data()[:300])
    r = api.post("/ains/tasks", c, data=b'{"task_type":"r","task_type":"s","capability_required":"report-v1"}', content_type="application/json")
    print("dup key", r.status_code, r.get_data()[:300])
    r = api.get("/ains/tasks?cursor=zzz", c); print("cursor", r.status_code, r.get_data()[:300])
    r = api.get("/ains/tasks?cursor=WyJ4IiwgMV0", c); print("cursor2", r.status_code, r.get_data()[:300])
    r = api.get("/ains/tasks?limit=abc&priority=0&status=FOO", c); print("q", r.status_code, r.get_data()[:400])
    r = api.get("/ains/tasks?created_after=notadate", c); print("q2", r.status_code, r.get_data()[:400])
    r = api.get("/ains/tasks?foo=1", c); print("q3", r.status_code, r.get_data()[:400])
    r = api.get("/ains/tasks?status=PENDING&status=ACTIVE", c); print("q4", r.status_code, r.get_data()[:400])
    r = api.get("/ains/tasks?created_after=2026-01-01T00:00:00", c); print("q5", r.status_code, r.get_data()[:400])
    r = api.get("/ains/tasks?client_id=%00", c); print("q6", r.status_code, r.get_data()[:400])
    r = api.get("/ains/tasks/task_%00", c); print("q7", r.status_code, r.get_data()[:400])
    r = api.get("/ains/agents/" + "x"*1000, c); print("q8", r.status_code, r.get_data()[:400])
