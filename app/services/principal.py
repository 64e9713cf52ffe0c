"""Who is acting: an API key's holder, an operator, or the system itself."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam

from app.extensions import db
from app.models import Agent, Role, Task
from app.services.errors import NotFound, NotPermitted


@dataclass(frozen=True)
class Principal:
    """The caller of a service, with the rules of what it may touch."""

    role: str
    name: str
    key_id: str | None = None
    client_id: str | None = None
    agent_id: str | None = None
    # Set when the system acts on someone's behalf (a schedule firing): the event rows say so.
    acting_as: str | None = None

    @property
    def actor(self) -> str:
        """How the caller is written into event rows."""
        if self.acting_as:
            return self.acting_as
        if self.role == Role.CLIENT:
            return f"client:{self.client_id}"
        if self.role == Role.AGENT and self.agent_id:
            return f"agent:{self.agent_id}"
        return f"{self.role}:{self.name}"

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    def require_role(self, *roles: str) -> None:
        """Refuse callers whose role is not among ``roles`` (admin always passes)."""
        if self.role != Role.ADMIN and self.role not in roles:
            allowed = ", ".join(sorted({Role.ADMIN, *roles}))
            raise NotPermitted(f"this action needs a key with role {allowed}; yours is {self.role}")

    def acts_for(self, agent: Agent) -> bool:
        """An agent key acts for the agent it is bound to or the agents it registered."""
        if self.is_admin:
            return True
        if self.role != Role.AGENT:
            return False
        if self.agent_id is not None:
            return agent.id == self.agent_id
        return agent.registered_by_key_id is not None and agent.registered_by_key_id == self.key_id

    def can_see_task(self, task: Task) -> bool:
        """Clients see their own tasks; agents the tasks assigned to agents they act for."""
        if self.is_admin:
            return True
        if self.role == Role.CLIENT:
            return task.client_id == self.client_id
        if self.role == Role.AGENT and task.assigned_agent_id is not None:
            if self.agent_id is not None:
                return task.assigned_agent_id == self.agent_id
            agent = task_agent(task)
            return agent is not None and self.acts_for(agent)
        return False


def task_agent(task: Task) -> Agent | None:
    """The agent a task is assigned to, if any."""
    return db.session.get(Agent, task.assigned_agent_id) if task.assigned_agent_id else None


SYSTEM = Principal(role=Role.ADMIN, name="system")


def schedule_runner(schedule_id: str) -> Principal:
    """A schedule creating its run's task: admin rights, written as ``schedule:<id>``."""
    return Principal(role=Role.ADMIN, name="scheduler", acting_as=f"schedule:{schedule_id}")


def operator(email: str) -> Principal:
    """A signed-in operator acting through the UI."""
    return Principal(role=Role.ADMIN, name=email)


def visible_agent(principal: Principal, agent_id: str) -> Agent:
    """An agent the principal may see: admins and clients see all, agent keys their own."""
    if principal.role == Role.AGENT:
        return require_agent(principal, agent_id)
    agent = db.session.get(Agent, agent_id)
    if agent is None:
        raise NotFound(f"agent {agent_id!r} not found")
    return agent


# Built once: every agent call loads its agent.
AGENT_BY_ID = db.select(Agent).where(Agent.id == bindparam("agent_id"))
# FOR NO KEY UPDATE: excludes other writers of the row, but not the key-share locks
# foreign-key checks take (a router assigning a task to this agent), which FOR UPDATE
# would block: that wait closed a deadlock cycle with the capability routing lock.
AGENT_LOCKED = AGENT_BY_ID.with_for_update(key_share=True)


def require_agent(principal: Principal, agent_id: str, *, lock: bool = False) -> Agent:
    """Load an agent the principal acts for; others are 404 so ids do not leak."""
    principal.require_role(Role.AGENT)
    query = AGENT_LOCKED if lock else AGENT_BY_ID
    agent = db.session.scalars(query, {"agent_id": agent_id}).first()
    if agent is None or not principal.acts_for(agent):
        raise NotFound(f"agent {agent_id!r} not found")
    return agent
