"""Schema version 4: a step's start and its whole budget in one transaction, concurrency shared.

- ``tenure_commit`` takes a step's debit — counters, rate windows and, new, its place in
  the run's **live governed tasks** (``max_concurrency`` across every process of the run)
  — in the transaction that appends its ``step.start``: granted, the records land; refused,
  their alternative (the record that says the step did not start) lands instead and
  nothing is taken. Every counter of a run is taken under one lock, the run's row.
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

-- One commit of a segment, in one round trip: fence; release the segment's ended steps;
-- for a step's start, its debit (live tasks first, then counters and rate windows, all
-- under the run's row lock): granted, p_lines land; refused, p_instead (NULL when granted,
-- else 'check<TAB>reason').
CREATE FUNCTION tenure_commit(p_member text, p_gen bigint, p_segment text, p_first bigint,
                              p_lines bytea[], p_instead bytea[], p_checkpoint text,
                              p_amounts jsonb, p_limits jsonb, p_rates jsonb,
                              p_enter integer, p_max_live integer, p_leave integer,
                              p_close boolean) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_refusal text;
    v_lines bytea[] := p_lines;
    v_size bigint;
    v_run text;
    v_live bigint;
BEGIN
    PERFORM tenure_fence(p_member, p_gen);
    SELECT size, run_id INTO v_size, v_run FROM tenure_segments
        WHERE id = p_segment AND member = p_member FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'segment % is not written by member %', p_segment, p_member
            USING ERRCODE = 'TN001';
    END IF;
    IF v_size <> p_first THEN
        RAISE EXCEPTION 'segment % holds % records, a batch at % would leave a gap or '
                        'overwrite', p_segment, v_size, p_first USING ERRCODE = 'TN002';
    END IF;
    IF p_close THEN
        DELETE FROM tenure_run_live WHERE run_id = v_run AND segment = p_segment;
    ELSIF p_leave > 0 THEN
        UPDATE tenure_run_live SET live = greatest(live - p_leave, 0)
            WHERE run_id = v_run AND segment = p_segment;
    END IF;
    IF p_amounts IS NOT NULL THEN
        INSERT INTO tenure_runs (id) VALUES (v_run) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM tenure_runs WHERE id = v_run FOR UPDATE;
        IF p_enter > 0 AND p_max_live IS NOT NULL THEN
            SELECT coalesce(sum(live), 0) INTO v_live FROM tenure_run_live
                WHERE run_id = v_run;
            IF v_live + p_enter > p_max_live THEN
                v_refusal := format(E'budget.max_concurrency\trun exceeded '
                                    'max_concurrency=%s across all its workers (%s live '
                                    'governed tasks)', p_max_live, v_live + p_enter);
            END IF;
        END IF;
        IF v_refusal IS NULL THEN
            v_refusal := tenure_debit(v_run, p_amounts, p_limits, p_rates, true);
        END IF;
        IF v_refusal IS NULL AND p_enter > 0 THEN
            INSERT INTO tenure_run_live AS l (run_id, segment, member, live)
                VALUES (v_run, p_segment, p_member, p_enter)
                ON CONFLICT (run_id, segment) DO UPDATE SET live = l.live + excluded.live;
        END IF;
        IF v_refusal IS NOT NULL THEN
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
