"""What a run leaves behind and how anyone checks it.

The ledger writer (:mod:`._ledger`), the RFC 9162 Merkle tree (:mod:`._merkle`), C2SP signed
notes and checkpoints (:mod:`._note`), the environment attestation (:mod:`._attest`,
:mod:`._measure`, :mod:`._statement`, :mod:`._remeasure`) and the offline verifier
(:func:`verify_run`). Nothing here imports the engine: a third party verifies a run
directory with this package and a public key alone.
"""

from ..crypto import PUBLIC_KEY_NAME, default_key_dir, load_public_key
from ._verify import VerifyReport, verify_run

__all__ = ["PUBLIC_KEY_NAME", "VerifyReport", "default_key_dir", "load_public_key", "verify_run"]
