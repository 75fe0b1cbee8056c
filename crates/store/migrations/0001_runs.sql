-- One row per request the gateway answered (pass-through or fusion, any surface). The columns
-- are what lists filter and sum on; `detail` (JSON) holds the rest: attempts, the fusion report
-- with each member's answer, the event timeline, and the text when `[store] content` is on.
-- Types every supported database reads the same way (SQLite and PostgreSQL).
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    caller TEXT,
    surface TEXT NOT NULL,
    model TEXT NOT NULL,
    answered_by TEXT,
    kind TEXT NOT NULL,
    stream BIGINT NOT NULL,
    status BIGINT NOT NULL,
    error_kind TEXT,
    latency_ms BIGINT NOT NULL,
    first_token_ms BIGINT,
    gateway_ms DOUBLE PRECISION,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION,
    detail TEXT NOT NULL
);

CREATE INDEX runs_newest ON runs (created_ms DESC, id DESC);
CREATE INDEX runs_model ON runs (model, created_ms DESC);
