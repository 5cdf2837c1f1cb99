"""Schema version 4: a step's start and its whole budget in one transaction, concurrency shared.

- ``tenure_commit`` takes a step's debit — counters, rate windows and, new, its place in
  the run's **live governed tasks** (``max_concurrency`` across every process of the run)
  — in the transaction that appends its ``step.start``: granted, the records land; refused,
  their alternative (the record that says the step did not start) lands instead and
  nothing is taken. Every counter of a run is taken under one lock, the run's row, and
  each is read and written once per commit (this is the hot path: one call per step).
- Live tasks are counted per segment (``tenure_run_live``): a commit releases the steps of
  its segment that ended since the last one, the segment's last commit releases whatever is
  left, and a reaped member's count is dropped with its liveness (its steps cannot be
  running any more: its authority ended on its own clock before the reap).
"""

from __future__ import annotations

from typing import Final

__all__ = ["V4"]

V4: Final = r"""
CREATE TABLE tenure_run_live (
    run_id text NOT NULL,
    segment text NOT NULL,
    member text NOT NULL,
    live integer NOT NULL CHECK (live >= 0),
    PRIMARY KEY (run_id, segment)
);
CREATE INDEX tenure_run_live_member ON tenure_run_live (member);

DROP FUNCTION tenure_commit(text, bigint, text, bigint, bytea[], bytea[], text, text, jsonb,
                            jsonb, jsonb, boolean);

-- What a step's start takes from its run, under the run's row lock (every counter of a
-- run is taken under it): its place among the live tasks, then its counters and rate
-- windows. NULL when granted (and taken), else 'check<TAB>reason' (and nothing taken).
CREATE FUNCTION tenure_take(p_run text, p_amounts jsonb, p_limits jsonb, p_rates jsonb,
                            p_enter integer, p_max_live integer, p_leave integer)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_used jsonb;
    v_key text;
    v_amount numeric;
    v_now numeric;
    v_limit numeric;
    v_rate jsonb;
    v_count bigint;
    v_live bigint;
BEGIN
    SELECT used INTO v_used FROM tenure_runs WHERE id = p_run FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO tenure_runs (id) VALUES (p_run) ON CONFLICT DO NOTHING;
        SELECT used INTO v_used FROM tenure_runs WHERE id = p_run FOR UPDATE;
    END IF;
    IF p_enter > 0 AND p_max_live IS NOT NULL THEN
        SELECT coalesce(sum(live), 0) - p_leave + p_enter INTO v_live
            FROM tenure_run_live WHERE run_id = p_run;
        IF v_live > p_max_live THEN
            RETURN format(E'budget.max_concurrency\trun exceeded max_concurrency=%s across '
                          'all its workers (%s live governed tasks)', p_max_live, v_live);
        END IF;
    END IF;
    FOR v_key, v_amount IN SELECT key, value::numeric FROM jsonb_each_text(p_amounts) LOOP
        v_now := coalesce((v_used ->> v_key)::numeric, 0) + v_amount;
        v_limit := (p_limits ->> v_key)::numeric;
        IF v_limit IS NOT NULL AND v_now > v_limit THEN
            RETURN format(E'budget.max_%s\trun exceeded max_%s=%s across all its workers '
                          '(%s would be %s)', v_key, v_key, v_limit, v_key, v_now);
        END IF;
        v_used := jsonb_set(v_used, ARRAY[v_key], to_jsonb(v_now));
    END LOOP;
    IF jsonb_array_length(p_rates) > 0 THEN
        FOR v_rate IN SELECT value FROM jsonb_array_elements(p_rates) LOOP
            DELETE FROM tenure_rate_events
                WHERE run_id = p_run AND key = v_rate ->> 'key'
                  AND at <= clock_timestamp()
                            - make_interval(secs => (v_rate ->> 'per')::float8);
            SELECT count(*) INTO v_count FROM tenure_rate_events
                WHERE run_id = p_run AND key = v_rate ->> 'key';
            IF v_count >= (v_rate ->> 'count')::bigint THEN
                RETURN format(E'ratelimit.%s\trate limit %s=%s/%ss exceeded across all '
                              'workers of run %s', v_rate ->> 'key', v_rate ->> 'key',
                              v_rate ->> 'count', v_rate ->> 'per', p_run);
            END IF;
        END LOOP;
        INSERT INTO tenure_rate_events (run_id, key, at)
            SELECT p_run, value ->> 'key', clock_timestamp()
            FROM jsonb_array_elements(p_rates);
    END IF;
    UPDATE tenure_runs SET used = v_used WHERE id = p_run;
    RETURN NULL;
END $$;

-- One commit of a segment, in one round trip: fence; for a step's start, its debit
-- (tenure_take): granted, p_lines land, refused, p_instead (the record that the step did not
-- start); the segment's live tasks move by what started minus what ended since its last
-- commit (all of them released by its last commit, p_close); the batch lands only at the
-- segment's size. NULL when granted, else 'check<TAB>reason'.
CREATE FUNCTION tenure_commit(p_member text, p_gen bigint, p_segment text, p_first bigint,
                              p_lines bytea[], p_instead bytea[], p_checkpoint text,
                              p_run text, p_amounts jsonb, p_limits jsonb, p_rates jsonb,
                              p_enter integer, p_max_live integer, p_leave integer,
                              p_close boolean) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_refusal text;
    v_lines bytea[] := p_lines;
    v_delta integer := -p_leave;
    v_size bigint;
BEGIN
    PERFORM tenure_fence(p_member, p_gen);
    IF p_run IS NULL THEN  -- (a writer that did not say: the segment's own)
        p_run := (SELECT s.run_id FROM tenure_segments s WHERE s.id = p_segment);
    END IF;
    IF p_amounts IS NOT NULL THEN
        v_refusal := tenure_take(p_run, p_amounts, p_limits, p_rates, p_enter, p_max_live,
                                 p_leave);
        IF v_refusal IS NULL THEN
            v_delta := v_delta + p_enter;
        ELSE
            v_lines := p_instead;
        END IF;
    END IF;
    IF p_close THEN
        DELETE FROM tenure_run_live WHERE run_id = p_run AND segment = p_segment;
    ELSIF v_delta <> 0 THEN
        INSERT INTO tenure_run_live AS l (run_id, segment, member, live)
            VALUES (p_run, p_segment, p_member, greatest(v_delta, 0))
            ON CONFLICT (run_id, segment) DO UPDATE SET live = greatest(l.live + v_delta, 0);
    END IF;
    UPDATE tenure_segments
        SET size = p_first + coalesce(array_length(v_lines, 1), 0),
            checkpoint = coalesce(p_checkpoint, checkpoint)
        WHERE id = p_segment AND member = p_member AND run_id = p_run AND size = p_first;
    IF NOT FOUND THEN  -- raising undoes the debit above: nothing of the commit remains
        SELECT size INTO v_size FROM tenure_segments
            WHERE id = p_segment AND member = p_member AND run_id = p_run;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'segment % of run % is not written by member %', p_segment,
                p_run, p_member USING ERRCODE = 'TN001';
        END IF;
        RAISE EXCEPTION 'segment % holds % records, a batch at % would leave a gap or '
                        'overwrite', p_segment, v_size, p_first USING ERRCODE = 'TN002';
    END IF;
    INSERT INTO tenure_records (segment, i, line)
        SELECT p_segment, p_first + u.ord - 1, u.line
        FROM unnest(v_lines) WITH ORDINALITY AS u(line, ord);
    RETURN v_refusal;
END $$;

-- As in version 1, and a lost member's live tasks are no longer counted.
CREATE OR REPLACE FUNCTION tenure_reap() RETURNS TABLE (member text, generation bigint,
                                                        name text, pool text, tasks text[])
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
        DELETE FROM tenure_run_live l WHERE l.member = v_m.id;
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
