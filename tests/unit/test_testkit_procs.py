"""The test kit's process helpers: a service is ready only when it answers itself."""

from __future__ import annotations

from pathlib import Path

import httpx

from testkit.ports import free_port
from testkit.procs import Service


def test_free_port_never_hands_out_a_port_twice() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)


def _answer(body: dict[str, str], status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body)


class _Running(Service):
    @property
    def alive(self) -> bool:
        return True


def test_an_answer_from_another_service_on_the_port_is_not_ready(tmp_path: Path) -> None:
    # The drill that failed: enqueue's port was taken by another service, whose /healthz
    # answered 200 before enqueue died on "address already in use".
    enqueue = _Running("enqueue-1", "enqueue", free_port(), {}, tmp_path / "log")
    assert not enqueue._ready(_answer({"status": "ok", "service": "transcriber"}))
    assert not enqueue._ready(_answer({"status": "not ready"}, 503))
    assert not enqueue._ready(None)
    assert enqueue._ready(_answer({"status": "ok", "service": "enqueue"}))
    assert enqueue._ready(_answer({"status": "ok"}))  # a stand-in that names no service
