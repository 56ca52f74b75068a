-- Hub replicas and the lease (docs/ha.md).

-- Leadership epochs are the hub lease's from now on: the revisions of the lease key in NATS
-- JetStream. The epochs counted here before are dropped, so that the first lease epoch is newer
-- than any of them; a hub of an older version still running under one is fenced off.
UPDATE leadership SET epoch = 0;

-- Every replica of the hub, for status pages: written by the replica itself every renew
-- interval (seen_at on its own clock, for display only), removed when it stops gracefully.
CREATE TABLE hub_replicas (
    id         TEXT PRIMARY KEY,
    address    TEXT NOT NULL,
    nats       TEXT NOT NULL,
    role       TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    since      BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL
);
