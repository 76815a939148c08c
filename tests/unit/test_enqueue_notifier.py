"""The enqueue service's coalescing NOTIFY sender, with a recording ``send``."""

from __future__ import annotations

import asyncio

from enqueue_service.notifier import NewJobNotifier


class Sends:
    def __init__(self, fail_first: int = 0) -> None:
        self.count = 0
        self.fail_first = fail_first
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise OSError("the store is down")
        self.count += 1


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_many_jobs_in_one_interval_make_one_notify() -> None:
    sends = Sends()
    notifier = NewJobNotifier(sends, interval=0.2)
    notifier.start()
    try:
        for _ in range(100):
            notifier.job_added()
        await settle()
        assert sends.count == 1
        for _ in range(100):  # added while the sender waits out its interval
            notifier.job_added()
        await asyncio.sleep(0.3)
        assert sends.count == 2
        await asyncio.sleep(0.3)
        assert sends.count == 2  # nothing new: nothing sent
    finally:
        await notifier.stop()


async def test_stop_sends_what_is_still_pending() -> None:
    sends = Sends()
    notifier = NewJobNotifier(sends, interval=10)
    notifier.start()
    notifier.job_added()
    await settle()
    notifier.job_added()  # within the interval: waits for the next send
    assert sends.count == 1
    await notifier.stop()
    assert sends.count == 2


async def test_a_failed_notify_is_sent_again() -> None:
    sends = Sends(fail_first=2)
    notifier = NewJobNotifier(sends, interval=0.01, retry_seconds=0.01)
    notifier.start()
    try:
        notifier.job_added()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if sends.count:
                break
        assert sends.calls == 3 and sends.count == 1
    finally:
        await notifier.stop()
