"""Free ports on 127.0.0.1.

A port found free is only free at that moment: whoever binds it later may lose a race
(:class:`testkit.procs.Service` retries on "address already in use").
"""

from __future__ import annotations

import contextlib
import random
import socket

#: Every port handed out by this process: the kernel may offer a released port again, and
#: two services given one port would race for it.
_GIVEN: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that no one listens on now, never one given before."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def free_port_block(size: int) -> int:
    """The first of ``size`` consecutive free ports (``transcription run --port-base``)."""
    for _ in range(50):
        base = random.randint(20_000, 60_000)
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + size):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no block of {size} free ports")
