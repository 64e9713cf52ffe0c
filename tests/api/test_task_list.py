"""GET /ains/tasks: filters, keyset pages, and who sees what."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import time_machine

from tests.api.support import T0
from tests.conftest import Api, Persona, Personas


def ids(api: Api, persona: Persona, **query: Any) -> list[str]:
    response = api.get("/ains/tasks", persona, query_string=query)
    assert response.status_code == 200, response.get_json()
    return [t["task_id"] for t in response.get_json()["tasks"]]


def all_pages(api: Api, persona: Persona, limit: int, **query: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params = {**query, "limit": limit, **({"cursor": cursor} if cursor else {})}
        body = api.get("/ains/tasks", persona, query_string=params).get_json()
        assert body["limit"] == limit
        pages.append([t["task_id"] for t in body["tasks"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 20, "pagination does not end"


def test_it_pages_through_every_task_once_newest_first(api: Api, personas: Personas) -> None:
    with time_machine.travel(T0, tick=False) as traveller:
        created = []
        for i in range(8):
            created.append(api.submit(personas.client)["task_id"])
            if i % 3 == 0:  # some tasks share a created_at: the id breaks the tie
                traveller.shift(timedelta(seconds=1))
    pages = all_pages(api, personas.client, limit=3)
    assert [len(p) for p in pages] == [3, 3, 2]
    flat = [task_id for page in pages for task_id in page]
    assert sorted(flat) == sorted(created) and len(set(flat)) == 8
    assert flat == ids(api, personas.client, limit=100)


def test_it_does_not_skip_tasks_submitted_while_paging(api: Api, personas: Personas) -> None:
    with time_machine.travel(T0, tick=False) as traveller:
        older = []
        for _ in range(4):
            older.append(api.submit(personas.client)["task_id"])
            traveller.shift(timedelta(seconds=1))
    first = api.get("/ains/tasks", personas.client, query_string={"limit": 2}).get_json()
    api.submit(personas.client)  # newer than every page: never shows up behind the cursor
    second = api.get(
        "/ains/tasks", personas.client, query_string={"limit": 2, "cursor": first["next_cursor"]}
    ).get_json()
    seen = [t["task_id"] for t in first["tasks"] + second["tasks"]]
    assert seen == list(reversed(older))


def test_it_filters_by_every_field(api: Api, personas: Personas) -> None:
    agent_a, key_a = api.register_agent(personas.fleet, capabilities=("report-v1",), slots=5)
    agent_b, key_b = api.register_agent(personas.fleet, capabilities=("translate-v2",), slots=5)
    with time_machine.travel(T0, tick=False) as traveller:
        report_hi = api.submit(personas.client, priority=9)["task_id"]
        traveller.shift(timedelta(hours=1))
        report_lo = api.submit(personas.client, priority=2)["task_id"]
        traveller.shift(timedelta(hours=1))
        translate = api.submit(personas.client, capability_required="translate-v2")["task_id"]
        traveller.shift(timedelta(hours=1))
        other = api.submit(personas.other_client, capability_required="idle-v1")["task_id"]
    assert [t["task_id"] for t in api.claim(agent_a, key_a)] == [report_hi]
    assert [t["task_id"] for t in api.claim(agent_b, key_b)] == [translate]
    admin = personas.admin

    assert ids(api, admin) == [other, translate, report_lo, report_hi]
    assert ids(api, admin, status="ACTIVE") == [translate, report_hi]
    assert ids(api, admin, status="ASSIGNED") == [report_lo]  # routed to agent a, unclaimed
    assert ids(api, admin, status="PENDING") == [other]  # no agent offers idle-v1
    assert ids(api, admin, client_id="client-2") == [other]
    assert ids(api, admin, capability="report-v1") == [report_lo, report_hi]
    assert ids(api, admin, agent_id=agent_a) == [report_lo, report_hi]
    assert ids(api, admin, agent_id=agent_b) == [translate]
    assert ids(api, admin, priority=2) == [report_lo]
    after = (T0 + timedelta(minutes=30)).isoformat()
    before = (T0 + timedelta(minutes=150)).isoformat()
    assert ids(api, admin, created_after=after) == [other, translate, report_lo]
    assert ids(api, admin, created_before=before) == [translate, report_lo, report_hi]
    assert ids(api, admin, created_after=after, created_before=before) == [translate, report_lo]
    assert ids(api, admin, status="ASSIGNED", capability="report-v1", priority=2) == [report_lo]
    assert ids(api, admin, status="PENDING", capability="report-v1") == []
    assert ids(api, admin, status="COMPLETED") == []
    # created_after is inclusive, created_before exclusive.
    assert ids(api, admin, created_after=T0.isoformat(), created_before=T0.isoformat()) == []
    assert ids(api, admin, created_after=T0.isoformat())[-1] == report_hi


def test_it_shows_clients_only_their_own_tasks(api: Api, personas: Personas) -> None:
    mine = api.submit(personas.client)["task_id"]
    theirs = api.submit(personas.other_client)["task_id"]
    assert ids(api, personas.client) == [mine]
    assert ids(api, personas.other_client) == [theirs]
    assert ids(api, personas.client, client_id="client-2") == []
    assert set(ids(api, personas.admin)) == {mine, theirs}


def test_it_shows_agent_keys_only_their_agents_tasks(api: Api, personas: Personas) -> None:
    # One capability each, so each task is routed to the agent meant to run it.
    agent_a, key_a = api.register_agent(personas.fleet, ("report-v1",), slots=5, name="a")
    agent_b, key_b = api.register_agent(personas.fleet, ("resize-v1",), slots=5, name="b")
    agent_c, key_c = api.register_agent(personas.other_fleet, ("scan-v1",), slots=5, name="c")
    task_a = api.submit(personas.client)["task_id"]
    assert [t["task_id"] for t in api.claim(agent_a, key_a)] == [task_a]
    task_b = api.submit(personas.client, capability_required="resize-v1")["task_id"]
    assert [t["task_id"] for t in api.claim(agent_b, key_b)] == [task_b]
    task_c = api.submit(personas.other_client, capability_required="scan-v1")["task_id"]
    assert [t["task_id"] for t in api.claim(agent_c, key_c)] == [task_c]
    unassigned = api.submit(personas.client, capability_required="idle-v1")["task_id"]

    assert ids(api, key_a) == [task_a]
    assert ids(api, key_b) == [task_b]
    assert sorted(ids(api, personas.fleet)) == sorted([task_a, task_b])
    assert ids(api, personas.other_fleet) == [task_c]
    assert ids(api, key_a, agent_id=agent_b) == []
    assert unassigned not in ids(api, personas.fleet)
    assert api.get(f"/ains/tasks/{task_a}", key_a).status_code == 200
    assert api.get(f"/ains/tasks/{task_a}", key_b).status_code == 404
    assert api.get(f"/ains/tasks/{task_a}", personas.fleet).status_code == 200


def test_it_reports_queue_metrics_by_priority_and_status(api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    for priority in (9, 5, 5):
        api.submit(personas.client, priority=priority)
    api.submit(personas.other_client, priority=1)
    api.claim(agent_id, agent)
    body = api.get("/ains/queue/metrics", personas.client).get_json()
    assert body["tasks_by_status"] == {"ACTIVE": 1, "PENDING": 2}
    assert body["queue_depth_by_priority"] == {"5": 2}
    assert body["tasks_by_priority"] == {"9": 1, "5": 2}
    assert set(body["avg_wait_time_by_priority"]) == {"5"}
    admin = api.get("/ains/queue/metrics", personas.admin).get_json()
    assert admin["queue_depth_by_priority"] == {"5": 2, "1": 1}
