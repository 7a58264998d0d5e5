"""The dashboard's web server (bridge/webserver.py) in a real bridge: gunicorn's threaded worker,
a thread per request only once its head has arrived, a limit on Socket.IO's share of the
threads, and a bound on every read and write.

The stalled clients are raw sockets that send a request's first bytes, or nothing, and
never read; whether the bridge has closed one is read from the kernel's TCP state, so no
test waits a fixed time.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests
import socketio

from bridge.webserver import TimedSocket
from tests.conftest import BridgeProcess
from tests.waiting import wait_until

TCP_ESTABLISHED = 1


def _connect(port: int, opening: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(opening)
    return sock


def _open_by_server(sock: socket.socket) -> bool:
    """The server has not closed this connection (no FIN or RST has arrived)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == TCP_ESTABLISHED


def _answered(sock: socket.socket) -> bytes:
    """What the server has sent on this connection so far, left unread."""
    try:
        return sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


def _websocket(port: int, query: str = "") -> socket.socket:
    """A Socket.IO websocket, handshake completed, that will never send or read again."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock = _connect(
        port,
        (
            f"GET /socket.io/?EIO=4&transport=websocket{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Origin: http://127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode(),
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        assert chunk, f"the bridge closed the websocket handshake: {answer!r}"
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return sock


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for sock in held:
        sock.close()


def test_a_production_server_answers(start_bridge: Callable[..., BridgeProcess]) -> None:
    bridge = start_bridge()
    page = requests.get(bridge.url + "/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Server"].startswith("gunicorn"), page.headers
    assert "development server" not in bridge.log().lower()
    # The websocket transport works (the dashboards' tests use it through Chromium too).
    client = socketio.Client()
    client.connect(bridge.url, transports=["websocket"], wait_timeout=10)
    assert client.transport() == "websocket"
    client.disconnect()


def test_connections_still_sending_their_request_hold_no_thread(
    start_bridge: Callable[..., BridgeProcess], sockets: list[socket.socket]
) -> None:
    """With 4 threads, 16 connections that sent nothing or half a request head: a request
    behind them is answered while all 16 are still open (each waiting in a thread would
    have held all four until it gave up), and the bridge closes them after its idle timeout."""
    bridge = start_bridge(SENSORPIPE_WEB_THREADS="4")
    sockets += [_connect(bridge.port, b"") for _ in range(8)]
    sockets += [_connect(bridge.port, b"GET /api/devices HTTP/1.1\r\nHost: 127.0.0.1\r\n") for _ in range(8)]
    answer = requests.get(bridge.url + "/api/devices", timeout=60)
    assert answer.status_code == 200
    assert all(_open_by_server(sock) for sock in sockets), "the answer waited for stalled connections to be closed"
    wait_until(lambda: not any(_open_by_server(sock) for sock in sockets), 60, "the bridge to close them")


@pytest.mark.slow
def test_a_stalled_request_body_gives_its_thread_back(
    start_bridge: Callable[..., BridgeProcess], sockets: list[socket.socket]
) -> None:
    """Four logins whose bodies never come hold all 4 threads; each read gives up (20 s) with
    408, the request waiting behind them is answered then, and the bridge closes them."""
    bridge = start_bridge(SENSORPIPE_WEB_THREADS="4", SENSORPIPE_WEB_PASSWORD="a-password")
    head = (
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 100\r\n\r\npassword="
    )
    sockets += [_connect(bridge.port, head) for _ in range(4)]
    answer = requests.get(bridge.url + "/healthz", timeout=120)
    assert answer.status_code == 200
    assert any(_answered(sock).startswith(b"HTTP/1.1 408") for sock in sockets), "answered before a thread was free?"
    wait_until(lambda: not any(_open_by_server(sock) for sock in sockets), 60, "the bridge to close them")
    assert all(_answered(sock).startswith(b"HTTP/1.1 408") for sock in sockets)
    assert "Traceback" not in bridge.log()


def test_live_dashboards_cannot_take_every_thread(
    start_bridge: Callable[..., BridgeProcess], sockets: list[socket.socket]
) -> None:
    """With 5 threads, Socket.IO may hold 3: three silent websockets, then the next Socket.IO
    request is refused with 503 while pages and the API are still served; one closed, a
    browser gets in again."""
    bridge = start_bridge(SENSORPIPE_WEB_THREADS="5")
    sockets += [_websocket(bridge.port) for _ in range(3)]
    poll = requests.get(bridge.url + "/socket.io/", params={"EIO": "4", "transport": "polling"}, timeout=30)
    assert poll.status_code == 503, poll.text
    assert "SENSORPIPE_WEB_THREADS" in poll.json()["error"]
    assert poll.headers["Retry-After"] == "5"
    assert requests.get(bridge.url + "/", timeout=30).status_code == 200
    assert requests.get(bridge.url + "/api/devices", timeout=30).status_code == 200
    sockets.pop().close()

    def polls() -> bool:
        params = {"EIO": "4", "transport": "polling"}
        return requests.get(bridge.url + "/socket.io/", params=params, timeout=30).status_code == 200

    wait_until(polls, 60, "a Socket.IO request to be served once a websocket closed")


def test_a_send_on_a_connection_gunicorn_closed_is_a_broken_pipe() -> None:
    """When a browser goes, gunicorn closes the connection while engine.io's writer thread may
    still send the websocket's closing frame; simple-websocket ignores a broken pipe there,
    but an EBADF ended that thread with a traceback in the bridge's log (seen in two tests of
    a fresh-clone run). The bridge's client sockets raise the one it ignores."""
    ours, theirs = socket.socketpair()
    timed = TimedSocket(ours.family, ours.type, ours.proto, fileno=ours.detach())
    timed.setblocking(True)
    timed.close()
    with pytest.raises(BrokenPipeError):
        timed.send(b"\x88\x00")
    with pytest.raises(BrokenPipeError):
        timed.sendall(b"\x88\x00")
    theirs.close()


def _server_frames(sock: socket.socket) -> list[int]:
    """The opcodes of the websocket frames the server sends until it ends the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    opcodes = []
    while len(data) >= 2:
        size, at = data[1] & 0x7F, 2
        if size == 126:
            size, at = int.from_bytes(data[2:4]), 4
        elif size == 127:
            size, at = int.from_bytes(data[2:10]), 10
        opcodes.append(data[0] & 0x0F)
        data = data[at + size :]
    return opcodes


def test_websockets_that_never_close_do_not_hold_the_stop(
    start_bridge: Callable[..., BridgeProcess], sockets: list[socket.socket]
) -> None:
    """Three browsers in the middle of sending a message, a byte now and then (a phone on
    bad Wi-Fi), that never answer the closing frame: on SIGTERM each is sent the closing
    frame and its connection is ended, and the bridge exits 0. Before, the thread reading
    each went on reading them for ever and the bridge never exited (a CI run saw it killed)."""
    bridge = start_bridge()
    sockets += [_websocket(bridge.port) for _ in range(3)]
    for sock in sockets:
        sock.sendall(b"\x82\xfe\x10\x00" + os.urandom(4))  # a masked binary frame of 4 KiB, begun
    done = threading.Event()

    def trickle() -> None:
        while not done.is_set():
            for sock in sockets:
                with contextlib.suppress(OSError):  # that one was ended
                    sock.sendall(b"x")
            time.sleep(0.2)  # pacing the client, not waiting for the bridge

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        code = bridge.stop()
    finally:
        done.set()
        sender.join()
    assert code == 0, f"the bridge exited with {code}:\n{bridge.log()[-3000:]}"
    for sock in sockets:
        assert 0x8 in _server_frames(sock), "no closing frame before the end of the connection"
    assert "still busy" not in bridge.log()


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A websocket frame as a browser sends it (masked), of a payload under 126 bytes."""
    mask = os.urandom(4)
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_a_browser_gone_during_the_websocket_upgrade_is_no_error(start_bridge: Callable[..., BridgeProcess]) -> None:
    """A page left while its Socket.IO connection moves from long polling to a websocket: the
    probe and the closing frame arrive together, and engine.io's answer to the probe goes
    into a closed websocket. That is the browser gone, not an error with a traceback in the
    log (seen in a suite run)."""
    bridge = start_bridge()
    opened = requests.get(bridge.url + "/socket.io/", params={"EIO": "4", "transport": "polling"}, timeout=30)
    sid = json.loads(opened.text[1:])["sid"]  # the open packet: "0" and JSON
    sock = _websocket(bridge.port, f"&sid={sid}")
    sock.sendall(_client_frame(0x1, b"2probe") + _client_frame(0x8, struct.pack("!H", 1000)))
    sock.close()
    assert bridge.stop() == 0
    assert "Traceback" not in bridge.log(), bridge.log()
