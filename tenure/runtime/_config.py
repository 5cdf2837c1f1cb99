"""Runtime configuration: every limit, interval and timeout declared once, with units.

Defaults are the safe ones. A bad value is refused with the field name, the value and what
was expected (pydantic), before anything runs. Every duration is finite and bounded above
(NaN and infinities are refused: an infinite lease or watchdog interval would switch the
safety mechanism it configures off).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._util import final

__all__ = ["RuntimeConfig"]

_HOUR = 3600.0
_DAY = 24 * _HOUR


@final
class RuntimeConfig(BaseModel):
    """Tunables of a :class:`~tenure.Runtime` (all durations in seconds)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    lease_seconds: float = Field(
        10.0, gt=0, le=_HOUR, description="lifetime of one lease generation"
    )
    renew_fraction: float = Field(
        0.5, gt=0, lt=1, description="renew when less than this fraction of a lease is left"
    )
    watchdog_interval: float = Field(0.25, gt=0, le=60, description="watchdog timer period")
    watchdog_liveness: float = Field(
        3.0, gt=0, le=_HOUR, description="a watchdog heartbeat older than this stops every run"
    )
    stall_bound: float = Field(
        1.0,
        gt=0,
        le=_HOUR,
        description="event loop blocked longer than this while work is live = breach",
    )
    worker_stall_bound: float | None = Field(
        None,
        gt=0,
        le=_DAY,
        description="a process-isolated call running longer than this is a stall: its stack "
        "is recorded, its worker killed and the run stopped (None: no bound)",
    )
    cleanup_grace: float = Field(
        1.0,
        gt=0,
        le=_DAY,
        description="after a stop, how long a task's except/finally blocks (shielded "
        "scopes included) may run before the task is abandoned",
    )
    heartbeat_interval: float = Field(0.05, gt=0, le=60, description="event-loop heartbeat period")
    attest_interval: float = Field(
        1.0, gt=0, le=_DAY, description="re-measure code and policy files"
    )
    verify_per_tick: int = Field(
        256,
        ge=1,
        description="at most this many lease signatures re-verified per tick (each live "
        "lease is re-verified about once per lease_seconds)",
    )
    renew_per_tick: int = Field(
        128, ge=1, description="at most this many leases renewed per watchdog pass"
    )
    approval_timeout: float = Field(
        300.0, gt=0, le=7 * _DAY, description="unanswered approval = deny"
    )
    keep_last_good_policy: bool = Field(
        False, description="on an invalid reload keep the previous set instead of stopping"
    )
    watch_policies: bool = Field(False, description="reload policy files when they change")
    approval_requests: bool = Field(
        True,
        description="show waiting approval requests in <evidence_dir>/.approvals and accept "
        "signed grants dropped there (tenure approvals --evidence-dir)",
    )
    revocation_requests: bool = Field(
        True,
        description="apply revocation requests other processes drop in "
        "<evidence_dir>/.revocations (tenure revoke)",
    )
    liveness_ttl: float = Field(
        3.0,
        gt=0,
        le=_HOUR,
        description="with a shared backend: the control-plane lease the server keeps for "
        "this process (server clock)",
    )
    liveness_margin: float = Field(
        0.5,
        gt=0,
        le=_HOUR,
        description="how much sooner than the server this process gives up its authority",
    )
    liveness_interval: float = Field(
        0.5, gt=0, le=60, description="seconds between control-plane renewals"
    )
    checkpoint_every: int = Field(1000, ge=1, description="records between signed checkpoints")
    checkpoint_interval: float = Field(
        1.0, gt=0, le=_HOUR, description="seconds between checkpoints"
    )
    fsync: Literal["record", "checkpoint", "never"] = Field(
        "checkpoint", description="when the ledger is fsynced"
    )

    @model_validator(mode="after")
    def _liveness_fits(self) -> RuntimeConfig:
        # The renewal rule needs margin < ttl and a renewal well inside ttl - margin.
        if not self.liveness_margin < self.liveness_ttl:
            raise ValueError(
                f"liveness_margin={self.liveness_margin:g} must be less than "
                f"liveness_ttl={self.liveness_ttl:g}"
            )
        if not self.liveness_interval < self.liveness_ttl - self.liveness_margin:
            raise ValueError(
                f"liveness_interval={self.liveness_interval:g} must be less than "
                f"liveness_ttl - liveness_margin = "
                f"{self.liveness_ttl - self.liveness_margin:g}"
            )
        return self

    def public(self) -> dict[str, str | int | bool]:
        """The configuration as attested and recorded (floats as strings: no JSON floats)."""
        out: dict[str, str | int | bool] = {}
        for name, value in self.model_dump().items():
            if value is None:
                out[name] = "none"
            else:
                out[name] = repr(value) if isinstance(value, float) else value
        return out
