"""``trialledger-verify``: verify an exported bundle with nothing but a trusted public key.

Exit codes, as the server's ``trialledger verify --bundle``: 0 the bundle verifies, 1 it does
not (one line naming the first failure), 2 a usage error (a missing or unreadable file, a
malformed witness key or quorum).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trialledger_verifier import __version__
from trialledger_verifier.bundle import (
    BundleInvalid,
    BundleReport,
    load_public_keys,
    load_witness_key,
    verify_bundle,
)

OK, INVALID, USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trialledger-verify",
        description="Verify a TrialLedger bundle offline: every file against the signed "
                    "manifest, every event's signature and key, every leaf, root and "
                    "checkpoint. Exit codes: 0 verifies, 1 does not, 2 usage error.")
    parser.add_argument("--bundle", type=Path, required=True, help="The bundle (.zip).")
    parser.add_argument("--public-key", type=Path, required=True,
                        help="The trusted public key(s), PEM (trialledger keys export-public).")
    parser.add_argument("--checkpoint", type=Path,
                        help="A checkpoint (signed note) you hold: the log must extend it.")
    parser.add_argument("--witness", action="append", default=[], metavar="VKEY",
                        help="A witness's verifier key (repeatable): every checkpoint must "
                             "carry the quorum of their cosignatures.")
    parser.add_argument("--quorum", type=int,
                        help="How many of the --witness keys must cosign (default: all).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


class _Unusable(Exception):
    """A file named on the command line cannot be used; the message names the option."""


def _read(option: str, path: Path) -> str:
    """The text of ``path``; :class:`_Unusable` naming ``option`` when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")  # not the locale's (Windows: cp1252)
    except OSError as e:
        raise _Unusable(f"{option} {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise _Unusable(f"{option} {path}: not a text file") from None


def _witnesses(vkeys: list[str], quorum: int | None) -> tuple[dict[str, Ed25519PublicKey], int]:
    """The witnesses named by ``vkeys`` (name -> key) and the quorum, checked."""
    witnesses: dict[str, Ed25519PublicKey] = {}
    for vkey in vkeys:
        try:
            name, key = load_witness_key(vkey)
        except BundleInvalid as e:
            raise _Unusable(f"--witness: {e}") from None
        witnesses[name] = key
    if quorum is None:
        return witnesses, len(witnesses)
    if not 1 <= quorum <= len(witnesses):
        raise _Unusable(f"--quorum {quorum}: between 1 and the number of --witness keys "
                        f"({len(witnesses)})")
    return witnesses, quorum


def _summary(path: Path, report: BundleReport, quorum: int) -> str:
    witnessed = (f"the latest checkpoint is cosigned by {', '.join(report.witnessed_by)} "
                 f"(quorum {quorum})" if quorum else
                 "cosignatures not checked (no --witness given)")
    return (f"OK {path}: study {report.study}, {report.events} events, {report.checkpoints} "
            f"checkpoints (latest size {report.latest_size}): every signature, key, leaf and "
            f"root verifies; {report.files} files match the signed manifest (as of "
            f"{report.as_of}, made {report.created_at} by {report.software_version}); "
            f"{witnessed}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: the process's); return the exit code."""
    args = _parser().parse_args(argv)
    try:
        if not args.bundle.is_file():
            raise _Unusable(f"--bundle {args.bundle}: no such file")
        held = _read("--checkpoint", args.checkpoint) if args.checkpoint else None
        key_text = _read("--public-key", args.public_key)
        try:
            trusted = load_public_keys(key_text)
        except (BundleInvalid, ValueError) as e:
            # The key the caller trusts cannot be read: a usage error, not bad evidence.
            raise _Unusable(f"--public-key {args.public_key}: {e}") from None
        witnesses, quorum = _witnesses(args.witness, args.quorum)
    except _Unusable as e:
        print(f"trialledger-verify: {e}", file=sys.stderr)
        return USAGE
    try:
        report = verify_bundle(args.bundle, trusted, held, witnesses=witnesses, quorum=quorum)
    except BundleInvalid as e:
        print(f"BUNDLE INVALID {args.bundle}: {e}")
        return INVALID
    print(_summary(args.bundle, report, quorum))
    return OK


if __name__ == "__main__":
    sys.exit(main())
