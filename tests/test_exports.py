"""The public API: what each package exports is exactly its ``__all__``, and the top level is
exactly the public contract of DESIGN.md (plus the types that contract hands to users).

Objects only the runtime may create have no public constructor: constructing one raises
``TypeError`` rather than yielding an object that looks governed but was never decided,
signed or recorded.
"""

from __future__ import annotations
import __future__

import importlib
import inspect
import types
from typing import Any

import pytest

import tenure

PACKAGES = [
    "tenure",
    "tenure.runtime",
    "tenure.agents",
    "tenure.policies",
    "tenure.crypto",
    "tenure.evidence",
    "tenure.lineage",
]

# DESIGN.md, "Layout": the public face of ``tenure/__init__.py`` is `agent`, `tool`,
# `Context`, `Runtime`, `RunHandle` and the exceptions ("Exceptions, all importable from
# `tenure`"); `ApprovalRequest` is named as what `rt.pending_approvals()` returns.
DESIGN_NAMES = {
    "agent",
    "tool",
    "Context",
    "Runtime",
    "RunHandle",
    "ApprovalRequest",
    "GovernanceViolation",
    "LeaseExpired",
    "LeaseRevoked",
    "PolicyDenied",
    "AttestationMismatch",
    "SignatureInvalid",
    "GovernanceUnavailable",
}

# Types that DESIGN.md's API hands to or takes from users without naming the class: each
# listed with where it appears. A new top-level export must be added here deliberately.
DESIGN_API_TYPES = {
    "Agent": "what @agent returns (the argument of rt.run / ctx.delegate)",
    "Tool": "what @tool returns (the argument of ctx.call)",
    "Parallel": "what ctx.parallel() returns",
    "ParallelTask": "what p.start(...) returns",
    "Lease": "what ctx.lease returns (DESIGN.md, 'Lease')",
    "RuntimeConfig": "Runtime(config=...)",
    "SigningKey": "Runtime(key=...)",
    "TenureError": "the root of every error Tenure raises on purpose (``except TenureError``)",
    "ModelCall": "what ctx.model_call(...) returns (the governed model-call seam)",
    "current_context": "the running step's Context, the seam framework adapters start from",
}

EXCEPTIONS = sorted(
    n
    for n in DESIGN_NAMES
    if n[0].isupper() and n not in {"Context", "Runtime", "RunHandle", "ApprovalRequest"}
)


def _public_attributes(module: types.ModuleType) -> set[str]:
    """Public names a module actually exposes (not submodules, not ``__future__`` flags)."""
    out = set()
    for name in dir(module):
        if name.startswith("_"):
            continue
        value = getattr(module, name)
        if isinstance(value, types.ModuleType | __future__._Feature):
            continue
        out.add(name)
    return out


def _isort_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps ``__all__`` in: CONSTANTS, Classes, functions."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


@pytest.mark.parametrize("package", PACKAGES)
def test_all_lists_exactly_the_public_attributes_of_each_package(package: str) -> None:
    module = importlib.import_module(package)
    exported = module.__all__
    assert len(exported) == len(set(exported)), f"{package}.__all__ has duplicates"
    assert list(exported) == sorted(exported, key=_isort_key), f"{package}.__all__ is not sorted"
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == [], f"{package}.__all__ names {missing} that it does not define"
    unlisted = sorted(_public_attributes(module) - set(exported))
    assert unlisted == [], f"{package} exposes {unlisted} without listing them in __all__"


def test_top_level_exports_exactly_the_design_contract() -> None:
    exported = set(tenure.__all__)
    assert DESIGN_NAMES - exported == set(), "DESIGN.md names missing from tenure.__all__"
    extra = exported - DESIGN_NAMES - set(DESIGN_API_TYPES)
    assert extra == set(), f"tenure exports {sorted(extra)}, which DESIGN.md does not name"
    unexported = set(DESIGN_API_TYPES) - exported
    assert unexported == set(), f"{sorted(unexported)} are handed to users but not exported"


def test_star_import_gives_the_same_objects_as_the_subpackages() -> None:
    namespace: dict[str, Any] = {}
    exec("from tenure import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(tenure.__all__)
    for name, value in namespace.items():
        homes = [importlib.import_module(p) for p in PACKAGES[1:]]
        owners = [m for m in homes if name in getattr(m, "__all__", ())]
        assert owners, f"tenure.{name} is not exported by any subpackage"
        for m in owners:
            assert getattr(m, name) is value, f"tenure.{name} is not {m.__name__}.{name}"


@pytest.mark.parametrize("name", EXCEPTIONS)
def test_every_exception_is_importable_from_tenure_and_tenure_runtime(name: str) -> None:
    import tenure.runtime

    exc = getattr(tenure, name)
    assert exc is getattr(tenure.runtime, name)
    assert issubclass(exc, tenure.GovernanceViolation)
    assert issubclass(exc, Exception)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_documented(package: str) -> None:
    module = importlib.import_module(package)
    assert inspect.getdoc(module)
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{package}.{name} has no docstring"


@pytest.mark.parametrize(
    "name", ["Agent", "Context", "Lease", "Parallel", "ParallelTask", "RunHandle", "Tool"]
)
def test_runtime_created_objects_have_no_public_constructor(name: str) -> None:
    cls = getattr(tenure, name)
    with pytest.raises(TypeError, match="no public constructor"):
        cls(None, None)
    with pytest.raises(TypeError):
        cls()


def test_approval_request_is_read_only() -> None:
    request = tenure.ApprovalRequest(
        id="apr_1",
        run_id="run_1",
        principal="alice",
        action="execute_tool",
        target="pay",
        rule_id="r",
        step="2",
        requested_at_us=0,
    )
    with pytest.raises(Exception, match="frozen"):
        request.target = "other"  # type: ignore[misc]


def test_decorated_agents_and_tools_cannot_be_called_directly() -> None:
    @tenure.tool
    async def t() -> None: ...

    @tenure.agent
    async def a(ctx: tenure.Context) -> None: ...

    for obj in (t, a):
        with pytest.raises(TypeError, match="cannot be called directly"):
            obj()


def _public_classes() -> list[tuple[str, type]]:
    out = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            value = getattr(module, name)
            if (
                isinstance(value, type)
                and not issubclass(value, BaseException)
                and not getattr(value, "_is_protocol", False)
            ):
                out.append((f"{package}.{name}", value))
    return out


@pytest.mark.parametrize(("name", "cls"), _public_classes(), ids=lambda v: str(v))
def test_public_classes_are_final(name: str, cls: type) -> None:
    """No public class can be subclassed (extension points are Protocols instead)."""
    with pytest.raises(TypeError, match="final"):
        type("Sub", (cls,), {})


def test_a_violation_names_its_run_once_the_run_claims_it() -> None:
    """The message is rendered when asked for, not frozen when the error was built."""
    exc = tenure.LeaseRevoked("revoked: operator", check="lease.revoked", source="revoke")
    assert "run=" not in str(exc)
    exc.run_id = "run_0123456789abcdef"
    assert "run=run_0123456789abcdef" in str(exc)


def test_every_tenure_error_has_one_root() -> None:
    """Governance, policy, evidence and usage errors all derive from TenureError."""
    from tenure._errors import EvidenceError, UsageError
    from tenure.policies import PolicyError

    for cls in (tenure.GovernanceViolation, PolicyError, EvidenceError, UsageError):
        assert issubclass(cls, tenure.TenureError)
