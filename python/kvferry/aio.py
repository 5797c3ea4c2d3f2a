"""asyncio over a CompletionQueue: the event loop sleeps on the queue's eventfd."""

import asyncio

from ._kvferry import Completion, CompletionQueue


async def wait_completions(queue: CompletionQueue, max: int | None = None) -> list[Completion]:
    """Waits without blocking the event loop until `queue` holds a completion, then drains
    up to `max` of them (oldest first)."""
    while True:
        done = queue.drain(max)
        if done:
            return done
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fd = queue.fileno()
        loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
        try:
            if len(queue) == 0:  # a completion pushed before add_reader is seen here
                await ready
        finally:
            loop.remove_reader(fd)
