"""Content hashes of files: one home, so the audit, the weights check and the data fingerprint
agree on what "the same bytes" means (and a change to the audit does not retrain the models)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_md5(path: Path | str) -> str:
    """md5 of a file's bytes, read in chunks (images, weights files, manifests)."""
    with Path(path).open("rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()
