"""MQTT brokers of a test's own: Mosquitto when its binary is on the machine, else amqtt."""

import asyncio
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

#: Where Debian puts the broker (not on a user's PATH).
MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
#: Longest a broker may take to listen (seconds).
START_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(
    extra_config: str = "",
    *,
    tls: tuple[Path, Path] | None = None,
    users: dict[str, str] | None = None,
) -> tuple[int, Callable[[], None]]:
    """A broker of the test's own on a free loopback port: ``(port, stop)``.

    Mosquitto (a process: stopping it closes every client's connection at once, as a
    broker's death does) with ``extra_config`` lines in its configuration; amqtt, in this
    process, when Mosquitto is not installed (then the options must be empty).

    Parameters
    ----------
    tls
        ``(certificate file, key file)``: the listener speaks TLS only, with that
        certificate.
    users
        User name to password: only they may connect (a password file made by
        ``mosquitto_passwd``); anonymous clients are refused.
    """
    if MOSQUITTO is None:
        assert not (extra_config or tls or users), "this test needs Mosquitto"
        return start_amqtt()
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="mosquitto-"))
    # Started as root, Mosquitto drops to the user "mosquitto" before it reads these files.
    folder.chmod(0o755)
    lines = [f"listener {port} 127.0.0.1", "persistence false"]
    if tls is not None:
        for source, kind in zip(tls, ("certfile", "keyfile"), strict=True):
            copy = folder / f"{kind}.pem"
            copy.write_bytes(source.read_bytes())
            copy.chmod(0o644)
            lines.append(f"{kind} {copy}")
    if users:
        passwords = folder / "passwords"
        for user, password in users.items():
            create = ["-c"] if not passwords.exists() else []
            subprocess.run([MOSQUITTO_PASSWD, *create, "-b", passwords, user, password], check=True)
        passwords.chmod(0o644)
        lines += [f"password_file {passwords}", "allow_anonymous false"]
    else:
        lines.append("allow_anonymous true")
    config = folder / "mosquitto.conf"
    config.write_text("\n".join(lines) + f"\n{extra_config}")
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + START_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"mosquitto did not start: {proc.communicate()[1]!r}") from None
            time.sleep(0.05)

    def stop() -> None:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)

    return port, stop


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
