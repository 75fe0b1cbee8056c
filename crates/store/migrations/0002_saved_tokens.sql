-- Tokens an early exit did not spend (`auto`: the cancelled members, the judge and the
-- synthesis, estimated from the run's own counts), so usage can sum what early exits saved.
ALTER TABLE runs ADD COLUMN saved_tokens BIGINT NOT NULL DEFAULT 0;
