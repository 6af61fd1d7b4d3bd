"""Signing through PKCS#11 (SoftHSM2) against a file key, in the same run.

Signs the same event-sized messages with a file key (the baseline) and with an Ed25519 key
generated on a SoftHSM2 token in a temporary directory: one by one in this process (what a
request's write pays), and in batches through a signing process (what a bulk load pays).
A real HSM answers over a bus or a network: expect its figures to be lower than SoftHSM2's.

    python bench/hsm_sign_bench.py [--messages N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_lines import bench_line  # bench/ is the script's directory, hence on sys.path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from infra.signers import Signer, handover
from infra.signing_process import SigningProcess

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "246810"


def _token(directory: Path) -> None:
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {directory / 'tokens'}\n"
                    "objectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)  # before the module is loaded
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", PIN,
                    "--so-pin", "13579111"], check=True, capture_output=True)


def _one_by_one(sign: Callable[[bytes], bytes], messages: list[bytes]) -> tuple[float, list[float]]:
    latencies = []
    start = time.perf_counter()
    for message in messages:
        t = time.perf_counter()
        sign(message)
        latencies.append((time.perf_counter() - t) * 1000)
    return len(messages) / (time.perf_counter() - start), latencies


def _batched(signer: Signer, messages: list[bytes], batch: int = 500) -> float:
    process = SigningProcess(handover(signer))
    try:
        process.signatures(messages[:1])  # the child's start-up is not the figure
        start = time.perf_counter()
        for i in range(0, len(messages), batch):
            process.signatures(messages[i:i + batch])
        return len(messages) / (time.perf_counter() - start)
    finally:
        process.close()


def main() -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    args = parser.parse_args()
    messages = [os.urandom(600) for _ in range(args.messages)]
    with tempfile.TemporaryDirectory(prefix="trialledger-hsm-bench-") as tmp:
        _token(Path(tmp))
        from infra.pkcs11_signer import Pkcs11Signer, TokenKey, generate_key

        where = TokenKey(MODULE, "bench", "bench-key", PIN)
        generate_key(where)
        token = Pkcs11Signer(where)
        file_key = Ed25519PrivateKey.generate()
        try:
            file_rate, file_ms = _one_by_one(file_key.sign, messages)
            token_rate, token_ms = _one_by_one(token.sign, messages)
            file_batched = _batched(file_key, messages)
            token_batched = _batched(token, messages)
        finally:
            token.close()
    print(f"{args.messages} messages of 600 bytes; file key: {file_rate:,.0f}/s one by one, "
          f"{file_batched:,.0f}/s batched; SoftHSM2: {token_rate:,.0f}/s one by one, "
          f"{token_batched:,.0f}/s batched")

    def quantiles(ms: list[float]) -> dict[str, float]:
        cuts = statistics.quantiles(ms, n=100)
        return {"p50_ms": cuts[49], "p99_ms": cuts[98]}

    print(bench_line("sign.file_key", file_rate, "signatures/s", file_rate, **quantiles(file_ms)))
    print(bench_line("sign.pkcs11_softhsm2", token_rate, "signatures/s", file_rate,
                **quantiles(token_ms)))
    print(bench_line("sign.pkcs11_softhsm2_batched", token_batched, "signatures/s", file_batched))


if __name__ == "__main__":
    main()
