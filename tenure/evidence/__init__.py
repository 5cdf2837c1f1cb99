"""What a run leaves behind and how anyone checks it.

The declared record format (:mod:`._format`), the ledger writer (:mod:`._ledger`), the one
ledger reader (:mod:`._reader`), the RFC 9162 Merkle tree (:mod:`._merkle`), C2SP signed
notes and checkpoints (:mod:`._note`), inclusion and consistency proofs (:mod:`._proof`),
audit bundles (:mod:`._bundle`), the environment attestation (:mod:`._attest`,
:mod:`._measure`, :mod:`._statement`, :mod:`._remeasure`) and the offline verifier
(:func:`verify_run`). Nothing here imports the engine: a third party verifies a run
directory with this package and a public key alone::

    from tenure.evidence import default_key_dir, load_public_key, verify_run

    report = verify_run("runs/run_1234", key=load_public_key(default_key_dir() / "tenure.pub"))
    print(report.verdict, report.tree_size, report.root)
    for failure in report.failures:
        print(failure.code, failure.message)
"""

from ..crypto import PUBLIC_KEY_NAME, default_key_dir, load_public_key, record_bytes
from ._format import (
    APPROVAL_PAYLOAD_TYPE,
    ATTESTATION_NAME,
    CHECKPOINT_NAME,
    INTOTO_PAYLOAD_TYPE,
    LEASE_PAYLOAD_TYPE,
    LEDGER_NAME,
    RECORD_FIELDS,
)
from ._reader import LedgerReadError
from ._report_model import CODES, Finding, Verdict, VerifyReport
from ._semantics import CLOCK_SKEW_US
from ._verify import verify_run

__all__ = [
    "APPROVAL_PAYLOAD_TYPE",
    "ATTESTATION_NAME",
    "CHECKPOINT_NAME",
    "CLOCK_SKEW_US",
    "CODES",
    "INTOTO_PAYLOAD_TYPE",
    "LEASE_PAYLOAD_TYPE",
    "LEDGER_NAME",
    "PUBLIC_KEY_NAME",
    "RECORD_FIELDS",
    "Finding",
    "LedgerReadError",
    "Verdict",
    "VerifyReport",
    "default_key_dir",
    "load_public_key",
    "record_bytes",
    "verify_run",
]
