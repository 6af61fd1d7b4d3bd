"""The log's side of C2SP tlog-witness: ask a witness to cosign a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from infra.ledger.cosignature import Cosigner, add_cosignatures, cosigned_at, parse_cosigner
from infra.ledger.note import NoteError
from infra.witness.witness import SIZE_CONTENT_TYPE, request_body

if TYPE_CHECKING:  # imported when a witness is asked: 15 MB in every process otherwise
    import httpx

TIMEOUT = 5.0


class WitnessUnavailable(RuntimeError):
    """The witness did not cosign: unreachable, refusing, or answering nonsense."""


class WitnessConflict(WitnessUnavailable):
    """The witness's latest cosigned size is not the old size sent (``size`` is its own)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the witness's latest cosigned size is {size}")
        self.size = size


@dataclass(frozen=True)
class WitnessEndpoint:
    """A witness a deployment names: its submission prefix and its key."""

    url: str
    cosigner: Cosigner

    @classmethod
    def parse(cls, entry: str) -> WitnessEndpoint:
        """``URL=VKEY``."""
        url, _, vkey = entry.partition("=")
        return cls(url.rstrip("/"), parse_cosigner(vkey))


def endpoints(entries: tuple[str, ...]) -> list[WitnessEndpoint]:
    """The witnesses of a deployment's settings."""
    return [WitnessEndpoint.parse(e) for e in entries]


def request_cosignature(client: httpx.Client, witness: WitnessEndpoint, old_size: int,
                        proof: list[bytes], note: str) -> str:
    """The witness's valid cosignature line on ``note``; raises :class:`WitnessConflict`
    (with the witness's size) or :class:`WitnessUnavailable`."""
    import httpx

    try:
        response = client.post(f"{witness.url}/add-checkpoint", timeout=TIMEOUT,
                               content=request_body(old_size, proof, note).encode())
    except httpx.HTTPError as e:
        raise WitnessUnavailable(f"{witness.url}: {e}") from e
    text = response.text
    if (response.status_code == 409
            and response.headers.get("content-type", "").startswith(SIZE_CONTENT_TYPE)
            and text.strip().isdigit()):
        raise WitnessConflict(int(text))
    if response.status_code != 200:
        raise WitnessUnavailable(f"{witness.url} answered {response.status_code}: "
                                 f"{text.strip()[:200]}")
    lines = [line + "\n" for line in text.split("\n") if line]
    for line in lines:
        try:
            if cosigned_at(add_cosignatures(note, [line]), witness.cosigner) is not None:
                return line
        except NoteError:
            continue
    raise WitnessUnavailable(f"{witness.url} answered no valid cosignature by "
                             f"{witness.cosigner.name}")
