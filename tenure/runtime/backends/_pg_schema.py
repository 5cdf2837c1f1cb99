"""The PostgreSQL schema: versioned migrations, applied idempotently, and the version gate.

``tenure db upgrade --backend URL`` calls :func:`upgrade`; every runtime and worker calls
:func:`check_schema` when it connects and refuses to start (fail closed, one line) on a
database whose schema it does not know: none yet, an older one (upgrade it), or a newer one
(upgrade Tenure).

Invariants:

- Migrations are numbered 1, 2, ...; each runs in its own transaction together with the
  row that records it, under a transaction-level advisory lock, so concurrent upgrades
  apply each migration once and a failed one leaves nothing half-applied.
- The governance log's revision comes from one locked counter row, never a sequence:
  revisions then commit in order (a reader resuming at ``revision > last`` skips nothing;
  with a ``bigserial`` concurrent writers commit out of order and readers skip rows).
- Every transaction that appends to the log locks the counter row *first*, before any
  member row, so appends, reaps and fenced writes cannot deadlock.
- Expiry is always compared with the server's ``clock_timestamp()``, never a client clock.
"""

from __future__ import annotations

from typing import Final

from ._pg_v3 import V3
from ._pg_v4 import V4

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

_V1: Final = r"""
CREATE TABLE tenure_gov_counter (
    id integer PRIMARY KEY CHECK (id = 1),
    revision bigint NOT NULL
);
INSERT INTO tenure_gov_counter VALUES (1, 0);

CREATE TABLE tenure_gov_log (
    revision bigint PRIMARY KEY,
    kind text NOT NULL,
    data jsonb NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE tenure_policies (
    digest text PRIMARY KEY,
    documents jsonb NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE tenure_members (
    id text PRIMARY KEY,
    name text NOT NULL,
    pool text,
    generation bigint NOT NULL,
    state text NOT NULL CHECK (state IN ('live', 'lost', 'left')),
    ttl interval NOT NULL,
    expires_at timestamptz NOT NULL,
    info jsonb NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX tenure_members_name ON tenure_members (name) WHERE name <> '';
CREATE INDEX tenure_members_live ON tenure_members (expires_at) WHERE state = 'live';

CREATE TABLE tenure_approvals (
    id text PRIMARY KEY,
    run_id text NOT NULL,
    request jsonb NOT NULL,
    requested_at_us bigint NOT NULL,
    requested_by text NOT NULL,
    decision text CHECK (decision IN ('granted', 'denied', 'timeout')),
    approver text NOT NULL DEFAULT '',
    reason text NOT NULL DEFAULT '',
    envelope jsonb,
    decided_at timestamptz
);
CREATE INDEX tenure_approvals_pending ON tenure_approvals (requested_at_us)
    WHERE decision IS NULL;

CREATE TABLE tenure_runs (
    id text PRIMARY KEY,
    used jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE tenure_rate_events (
    run_id text NOT NULL,
    key text NOT NULL,
    at timestamptz NOT NULL
);
CREATE INDEX tenure_rate_events_window ON tenure_rate_events (run_id, key, at);

CREATE TABLE tenure_tasks (
    id text PRIMARY KEY,
    pool text NOT NULL,
    run_id text NOT NULL,
    state text NOT NULL CHECK (state IN ('queued', 'claimed', 'done', 'failed', 'lost')),
    payload jsonb NOT NULL,
    enqueued_by text NOT NULL,
    claimer text,
    claimer_gen bigint,
    result jsonb,
    error jsonb,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    claimed_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX tenure_tasks_queued ON tenure_tasks (pool, created_at) WHERE state = 'queued';
CREATE INDEX tenure_tasks_claimed ON tenure_tasks (claimer) WHERE state = 'claimed';

CREATE TABLE tenure_segments (
    id text PRIMARY KEY,
    run_id text NOT NULL,
    member text NOT NULL,
    parent text NOT NULL,
    parent_index bigint NOT NULL,
    meta jsonb NOT NULL,
    size bigint NOT NULL DEFAULT 0,
    checkpoint text,
    opened_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX tenure_segments_run ON tenure_segments (run_id, opened_at);

CREATE TABLE tenure_records (
    segment text NOT NULL,
    i bigint NOT NULL,
    line bytea NOT NULL,
    PRIMARY KEY (segment, i)
);

-- Lock the counter, write the event, notify (delivered at commit). Callers that also
-- touch member rows must call this before them (see the module docstring).
CREATE FUNCTION tenure_append(p_kind text, p_data jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_rev bigint;
BEGIN
    UPDATE tenure_gov_counter SET revision = revision + 1 WHERE id = 1
        RETURNING revision INTO v_rev;
    INSERT INTO tenure_gov_log (revision, kind, data) VALUES (v_rev, p_kind, p_data);
    PERFORM pg_notify('tenure_gov', v_rev::text);
    RETURN v_rev;
END $$;

-- The fence: the member's row, share-locked so a concurrent reap waits for this
-- transaction (and this one sees the reap if it committed first).
CREATE FUNCTION tenure_fence(p_member text, p_gen bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM tenure_members
        WHERE id = p_member AND generation = p_gen AND state = 'live'
          AND expires_at > clock_timestamp()
        FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'member % generation % is not live', p_member, p_gen
            USING ERRCODE = 'TN001';
    END IF;
END $$;

-- A debit of a run's shared budget: NULL when granted, else 'check<TAB>reason'.
CREATE FUNCTION tenure_debit(p_run text, p_amounts jsonb, p_limits jsonb, p_rates jsonb,
                             p_reserve boolean) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_used jsonb;
    v_key text;
    v_amount numeric;
    v_now numeric;
    v_limit numeric;
    v_refusal text;
    v_rate jsonb;
    v_count bigint;
BEGIN
    INSERT INTO tenure_runs (id) VALUES (p_run) ON CONFLICT DO NOTHING;
    SELECT used INTO v_used FROM tenure_runs WHERE id = p_run FOR UPDATE;
    FOR v_key, v_amount IN SELECT key, value::numeric FROM jsonb_each_text(p_amounts) LOOP
        v_now := coalesce((v_used ->> v_key)::numeric, 0) + v_amount;
        v_limit := (p_limits ->> v_key)::numeric;
        IF v_refusal IS NULL AND v_limit IS NOT NULL AND v_now > v_limit THEN
            v_refusal := format(E'budget.max_%s\trun exceeded max_%s=%s across all its '
                                'workers (%s would be %s)',
                                v_key, v_key, v_limit, v_key, v_now);
        END IF;
        v_used := jsonb_set(v_used, ARRAY[v_key], to_jsonb(v_now));
    END LOOP;
    IF p_reserve THEN
        FOR v_rate IN SELECT value FROM jsonb_array_elements(p_rates) LOOP
            DELETE FROM tenure_rate_events
                WHERE run_id = p_run AND key = v_rate ->> 'key'
                  AND at <= clock_timestamp()
                            - make_interval(secs => (v_rate ->> 'per')::float8);
            SELECT count(*) INTO v_count FROM tenure_rate_events
                WHERE run_id = p_run AND key = v_rate ->> 'key';
            IF v_refusal IS NULL AND v_count >= (v_rate ->> 'count')::bigint THEN
                v_refusal := format(E'ratelimit.%s\trate limit %s=%s/%ss exceeded across '
                                    'all workers of run %s',
                                    v_rate ->> 'key', v_rate ->> 'key', v_rate ->> 'count',
                                    v_rate ->> 'per', p_run);
            END IF;
        END LOOP;
        IF v_refusal IS NOT NULL THEN
            RETURN v_refusal;
        END IF;
        INSERT INTO tenure_rate_events (run_id, key, at)
            SELECT p_run, value ->> 'key', clock_timestamp()
            FROM jsonb_array_elements(p_rates);
    END IF;
    UPDATE tenure_runs SET used = v_used WHERE id = p_run;
    RETURN v_refusal;
END $$;

-- One step's commit, in one round trip: fence, debit, then the records (or, when the
-- debit is refused, the alternative records that say so), at the segment's size.
CREATE FUNCTION tenure_commit(p_member text, p_gen bigint, p_segment text, p_first bigint,
                              p_lines bytea[], p_instead bytea[], p_checkpoint text,
                              p_run text, p_amounts jsonb, p_limits jsonb, p_rates jsonb,
                              p_reserve boolean) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_refusal text;
    v_lines bytea[] := p_lines;
    v_size bigint;
BEGIN
    PERFORM tenure_fence(p_member, p_gen);
    SELECT size INTO v_size FROM tenure_segments
        WHERE id = p_segment AND member = p_member FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'segment % is not written by member %', p_segment, p_member
            USING ERRCODE = 'TN001';
    END IF;
    IF v_size <> p_first THEN
        RAISE EXCEPTION 'segment % holds % records, a batch at % would leave a gap or '
                        'overwrite', p_segment, v_size, p_first USING ERRCODE = 'TN002';
    END IF;
    IF p_run IS NOT NULL THEN
        v_refusal := tenure_debit(p_run, p_amounts, p_limits, p_rates, p_reserve);
        IF v_refusal IS NOT NULL AND p_reserve THEN
            v_lines := p_instead;
        END IF;
    END IF;
    INSERT INTO tenure_records (segment, i, line)
        SELECT p_segment, p_first + u.ord - 1, u.line
        FROM unnest(v_lines) WITH ORDINALITY AS u(line, ord);
    UPDATE tenure_segments
        SET size = p_first + coalesce(array_length(v_lines, 1), 0),
            checkpoint = coalesce(p_checkpoint, checkpoint)
        WHERE id = p_segment;
    RETURN v_refusal;
END $$;

-- Declare lapsed members lost: generation bumped once, their claimed tasks lost, one
-- worker.lost event each. The counter is locked first (see tenure_append).
CREATE FUNCTION tenure_reap() RETURNS TABLE (member text, generation bigint, name text,
                                             pool text, tasks text[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_m record;
    v_tasks text[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM tenure_members m
                   WHERE m.state = 'live' AND m.expires_at <= clock_timestamp()) THEN
        RETURN;
    END IF;
    PERFORM 1 FROM tenure_gov_counter WHERE id = 1 FOR UPDATE;
    FOR v_m IN
        UPDATE tenure_members m SET state = 'lost', generation = m.generation + 1
            WHERE m.state = 'live' AND m.expires_at <= clock_timestamp()
            RETURNING m.id, m.generation - 1 AS gen, m.name, m.pool
    LOOP
        WITH lapsed AS (
            UPDATE tenure_tasks t SET state = 'lost', finished_at = clock_timestamp()
                WHERE t.claimer = v_m.id AND t.claimer_gen = v_m.gen AND t.state = 'claimed'
                RETURNING t.id
        )
        SELECT coalesce(array_agg(lapsed.id ORDER BY lapsed.id), '{}') INTO v_tasks
            FROM lapsed;
        PERFORM tenure_append('worker.lost', jsonb_build_object(
            'member', v_m.id, 'generation', v_m.gen, 'name', v_m.name,
            'tasks', to_jsonb(v_tasks)));
        PERFORM pg_notify('tenure_task', t) FROM unnest(v_tasks) AS t;
        member := v_m.id; generation := v_m.gen; name := v_m.name; pool := v_m.pool;
        tasks := v_tasks;
        RETURN NEXT;
    END LOOP;
END $$;
"""

# Version 2: every fenced write in one round trip (a function doing fence + write), where
# version 1 took a transaction of several statements (BEGIN, fence, write, notify, COMMIT).
_V2: Final = r"""
CREATE FUNCTION tenure_debit_fenced(p_member text, p_gen bigint, p_run text, p_amounts jsonb,
                                    p_limits jsonb, p_rates jsonb, p_reserve boolean)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tenure_fence(p_member, p_gen);
    RETURN tenure_debit(p_run, p_amounts, p_limits, p_rates, p_reserve);
END $$;

CREATE FUNCTION tenure_enqueue(p_member text, p_gen bigint, p_id text, p_pool text,
                               p_run text, p_payload jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tenure_fence(p_member, p_gen);
    INSERT INTO tenure_tasks (id, pool, run_id, state, payload, enqueued_by)
        VALUES (p_id, p_pool, p_run, 'queued', p_payload, p_member);
    PERFORM pg_notify('tenure_queue', p_pool);
END $$;

CREATE FUNCTION tenure_claim(p_member text, p_gen bigint, p_pool text)
RETURNS TABLE (task text, task_pool text, task_run text, task_payload jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v record;
BEGIN
    PERFORM tenure_fence(p_member, p_gen);
    UPDATE tenure_tasks t SET state = 'claimed', claimer = p_member, claimer_gen = p_gen,
           claimed_at = clock_timestamp()
        WHERE t.id = (SELECT q.id FROM tenure_tasks q
                      WHERE q.pool = p_pool AND q.state = 'queued'
                      ORDER BY q.created_at, q.id LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING t.id, t.pool, t.run_id, t.payload INTO v;
    IF FOUND THEN
        PERFORM pg_notify('tenure_task', v.id);
        task := v.id; task_pool := v.pool; task_run := v.run_id; task_payload := v.payload;
        RETURN NEXT;
    END IF;
END $$;

CREATE FUNCTION tenure_finish(p_member text, p_gen bigint, p_id text, p_state text,
                              p_result jsonb, p_error jsonb) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tenure_fence(p_member, p_gen);
    UPDATE tenure_tasks SET state = p_state, result = p_result, error = p_error,
           finished_at = clock_timestamp()
        WHERE id = p_id AND claimer = p_member AND claimer_gen = p_gen AND state = 'claimed';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('tenure_task', p_id);
    RETURN true;
END $$;

CREATE FUNCTION tenure_open_segment(p_member text, p_gen bigint, p_id text, p_run text,
                                    p_parent text, p_index bigint, p_meta jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tenure_fence(p_member, p_gen);
    INSERT INTO tenure_segments (id, run_id, member, parent, parent_index, meta)
        VALUES (p_id, p_run, p_member, p_parent, p_index, p_meta);
END $$;

CREATE FUNCTION tenure_request_approval(p_member text, p_gen bigint, p_id text, p_run text,
                                        p_request jsonb, p_at bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tenure_fence(p_member, p_gen);
    INSERT INTO tenure_approvals (id, run_id, request, requested_at_us, requested_by)
        VALUES (p_id, p_run, p_request, p_at, p_member);
END $$;
"""

#: (version, SQL) in order; a released migration is never edited, only followed.
MIGRATIONS: Final[tuple[tuple[int, str], ...]] = ((1, _V1), (2, _V2), (3, V3), (4, V4))

#: The schema version this Tenure reads and writes.
SCHEMA_VERSION: Final = MIGRATIONS[-1][0]
