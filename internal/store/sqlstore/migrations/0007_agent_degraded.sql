-- Why an agent takes no new work (its disk is full, its outbox is full…), as its latest
-- heartbeat said. A row only while it is degraded. A table of its own rather than a column of
-- agents, so that heartbeats of healthy agents (nearly all of them) write nothing here.
CREATE TABLE agent_conditions (
    agent_id TEXT PRIMARY KEY,
    degraded TEXT NOT NULL
);
