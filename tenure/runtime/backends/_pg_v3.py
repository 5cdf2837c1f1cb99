"""Schema version 3: events ride in their notification; a claim answers who queued the task.

- ``tenure_append`` notifies ``tenure_gov`` with the event itself (``{"r": revision, "k":
  kind, "d": data}``, or ``{"r": revision}`` alone when it would not fit in a NOTIFY
  payload), so a listener applies it without reading the log back. Readers still read the
  log from their last revision whenever a notification is missing or carries no event:
  the notification stays a hint.
- ``tenure_claim`` also answers the enqueuing member, what that member registered about
  itself (its signing key), and the governance log's head at the claim: the claimer applies
  every event up to that head before it trusts the task, so a revocation committed before
  the claim is always seen (the renewal rule, applied to claims).
"""

from __future__ import annotations

from typing import Final

__all__ = ["V3"]

V3: Final = r"""
CREATE OR REPLACE FUNCTION tenure_append(p_kind text, p_data jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_rev bigint;
    v_hint text;
BEGIN
    UPDATE tenure_gov_counter SET revision = revision + 1 WHERE id = 1
        RETURNING revision INTO v_rev;
    INSERT INTO tenure_gov_log (revision, kind, data) VALUES (v_rev, p_kind, p_data);
    v_hint := jsonb_build_object('r', v_rev, 'k', p_kind, 'd', p_data)::text;
    IF octet_length(v_hint) > 7900 THEN  -- NOTIFY payloads stop short of 8000 bytes
        v_hint := jsonb_build_object('r', v_rev)::text;
    END IF;
    PERFORM pg_notify('tenure_gov', v_hint);
    RETURN v_rev;
END $$;

DROP FUNCTION tenure_claim(text, bigint, text);
CREATE FUNCTION tenure_claim(p_member text, p_gen bigint, p_pool text)
RETURNS TABLE (task text, task_pool text, task_run text, task_payload jsonb, task_by text,
               by_info jsonb, head bigint)
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
        RETURNING t.id, t.pool, t.run_id, t.payload, t.enqueued_by INTO v;
    IF FOUND THEN
        PERFORM pg_notify('tenure_task', v.id);
        task := v.id; task_pool := v.pool; task_run := v.run_id; task_payload := v.payload;
        task_by := v.enqueued_by;
        by_info := (SELECT m.info FROM tenure_members m WHERE m.id = v.enqueued_by);
        head := (SELECT c.revision FROM tenure_gov_counter c WHERE c.id = 1);
        RETURN NEXT;
    END IF;
END $$;
"""
