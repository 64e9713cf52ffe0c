"""The dispatch loop through the API, in-process."""

from tests.conftest import Api, Personas


def test_it_runs_a_task_from_submit_to_completed(api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    task = api.submit(personas.client, input_data={"report_type": "sales"}, priority=7)
    assert task["status"] == "ASSIGNED"  # routed at once to the only agent
    claimed = api.claim(agent_id, agent, max_tasks=5)
    assert [t["task_id"] for t in claimed] == [task["task_id"]]
    assert claimed[0]["status"] == "ACTIVE" and claimed[0]["attempt"] == 1
    done = api.post(
        f"/ains/tasks/{task['task_id']}/complete", agent, json={"result_data": {"ok": True}}
    )
    assert done.status_code == 200 and done.get_json()["status"] == "COMPLETED"
    detail = api.get(f"/ains/tasks/{task['task_id']}", personas.client).get_json()
    assert [(e["from_status"], e["to_status"]) for e in detail["events"]] == [
        (None, "PENDING"),
        ("PENDING", "ASSIGNED"),
        ("ASSIGNED", "ACTIVE"),
        ("ACTIVE", "COMPLETED"),
    ]
    assert detail["result_data"] == {"ok": True}
