"""Renewal and re-verification of a live lease tree, in random interleavings.

A child lease binds the digest of the parent generation it was issued (or renewed) under.
The watchdog renews parents and children independently and re-verifies any of them at any
time; a child must always be checked against the generation it is bound to, so no order of
renewals and re-verifications ever stops a healthy run — while a genuinely tampered lease
is still caught.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from tenure import Context, Runtime, SignatureInvalid, SigningKey, agent
from tenure.crypto import b64d, b64e
from tenure.policies import PolicySet
from tenure.runtime.kernel._lease import Lease
from tenure.runtime.kernel._state import LeaseState

INTERLEAVINGS = 1_000
MAX_OPS = 12


class _Tree:
    """root -> mid -> (leaf, leaf): every agent parks until ``release``."""

    def __init__(self) -> None:
        self.parked = 0
        self.all_parked = anyio.Event()
        self.release = anyio.Event()

    async def park(self) -> None:
        self.parked += 1
        if self.parked == 3:
            self.all_parked.set()
        await self.release.wait()


TREE = _Tree()


@agent
async def leaf(ctx: Context) -> None:
    """Parks."""
    await TREE.park()


@agent
async def mid(ctx: Context) -> None:
    """Fans out to two leaves and parks."""
    async with ctx.parallel() as p:
        p.start(leaf)
        p.start(leaf)
        await TREE.park()


@agent
async def root(ctx: Context) -> None:
    """Delegates to ``mid``."""
    await ctx.delegate(mid)


def _by_depth(states: list[LeaseState]) -> list[LeaseState]:
    return sorted(states, key=lambda s: s.lease.claims.depth)


async def test_no_interleaving_of_renewals_and_reverification_stops_a_healthy_run(
    allow_all: PolicySet, evidence: Path
) -> None:
    """1,000 random interleavings of renew(any lease) / re-verify(any lease) over a live
    tree four leases deep and wide: never a stop; then one tampered byte is caught."""
    global TREE
    TREE = _Tree()
    key = SigningKey.generate()
    # The watchdog's own passes run between interleavings: one more source of orderings.
    async with Runtime(policies=allow_all, evidence_dir=evidence, key=key) as rt:
        handle = await rt.start(root, principal="alice", ttl=3600)
        with anyio.fail_after(10):
            await TREE.all_parked.wait()
        run: Any = handle._run
        watchdog: Any = rt._watchdog
        states = _by_depth(list(run.leases.values()))
        assert [s.lease.claims.depth for s in states] == [0, 1, 2, 2]
        renewals = 0
        for seed in range(INTERLEAVINGS):
            rng = random.Random(seed)
            for _ in range(rng.randint(1, MAX_OPS)):
                state = rng.choice(states)
                if rng.random() < 0.5:
                    run.renew_leases([state])
                    renewals += 1
                else:
                    assert watchdog.verify_lease(run, state), f"seed {seed}: {run.stop!r}"
                assert run.stop is None, f"seed {seed}: false stop {run.stop!r}"
            await anyio.lowlevel.checkpoint()  # the loop (heartbeat, stall detector) turns
        assert renewals > INTERLEAVINGS
        assert all(s.lease.claims.gen > 0 for s in states)

        # A tampered child: one flipped bit in its signed payload is caught at once.
        victim = states[-1]
        envelope = dict(victim.lease.envelope)
        payload = bytearray(b64d(envelope["payload"]))
        payload[-2] ^= 1
        envelope["payload"] = b64e(bytes(payload))
        victim.lease = Lease._create(victim.lease.claims, victim.lease.payload, envelope)
        assert not watchdog.verify_lease(run, victim)
        assert isinstance(run.stop, SignatureInvalid)
        assert run.stop.lease_id == victim.id
        TREE.release.set()
        try:
            await handle.result()
        except SignatureInvalid as exc:
            assert exc.check == "lease.signature"
        else:  # pragma: no cover - the assertion below explains
            raise AssertionError("the tampered lease did not stop the run")
