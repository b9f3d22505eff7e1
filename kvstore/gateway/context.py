"""The grpc.aio.ServicerContext a servicer sees when called by the gateway.

Owns: `GatewayContext` — the part of grpc's servicer context the api/
servicers use (`abort`, `code`, `invocation_metadata`, plus harmless
no-ops), and `GatewayAbort`, what `abort` raises: a `grpc.aio.AbortError`
subclass, so `api.errors.grpc_errors` treats it exactly as a real abort
(counts the code, re-raises) and the gateway turns it into its error JSON.
Never: talks to the network; never swallows the abort.

Metadata: as etcd's gateway, the HTTP `Authorization` header becomes the
`authorization` metadata and `Grpc-Metadata-<Key>` headers become `<key>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import grpc


class GatewayAbort(grpc.aio.AbortError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class GatewayContext:
    def __init__(self, headers: Mapping[str, str] | None = None, peer: str = "") -> None:
        self._metadata: tuple[tuple[str, str], ...] = _metadata(headers or {})
        self._peer = peer
        self._code: grpc.StatusCode | None = None
        self._details = ""

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = None
    ) -> NoReturn:
        self._code, self._details = code, details
        raise GatewayAbort(code, details)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def time_remaining(self) -> float | None:
        return None

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    async def send_initial_metadata(self, metadata: Any) -> None:
        return None

    def set_trailing_metadata(self, metadata: Any) -> None:
        return None

    def add_done_callback(self, callback: Any) -> None:
        return None


def _metadata(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for key, value in headers.items():
        lower = key.lower()
        if lower == "authorization":
            out.append(("authorization", value))
        elif lower.startswith("grpc-metadata-"):
            out.append((lower[len("grpc-metadata-") :], value))
    return tuple(out)
