"""A local amqtt MQTT broker, for tests that need a broker of their own (or no other)."""

import asyncio
import socket
import threading
from collections.abc import Callable


def start_amqtt() -> tuple[int, Callable[[], None]]:
    """Start an amqtt broker on a free loopback port; return ``(port, stop)``."""
    from amqtt.broker import Broker

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "auth": {"allow-anonymous": True},
    }
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stopping = asyncio.Event()

    async def serve() -> None:
        broker = Broker(config)
        await broker.start()
        ready.set()
        await stopping.wait()
        await broker.shutdown()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the amqtt broker did not start")

    def stop() -> None:
        loop.call_soon_threadsafe(stopping.set)
        thread.join(10)

    return port, stop
