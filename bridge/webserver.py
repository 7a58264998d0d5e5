"""The dashboard's web server: gunicorn's threaded worker, run inside the bridge's own process.

Flask-SocketIO's deployment docs name gunicorn with threads (and simple-websocket) for the
threading mode this bridge uses: the websocket transport stays, and the ingest stages run in
the same process as the web UI, so a reading reaches the browsers without a message queue.
gunicorn's usual shape, a master forking workers, does not fit that: the bridge would be
built in a child the service manager does not see, SIGHUP would restart it instead of
rereading the alert rules, and its exit status (2 for a bad setting) would be the master's.
So the bridge runs one gunicorn worker itself, in its main thread:

- a fixed pool of `threads` threads serves the requests. A connection waits in the worker's
  poller, not in a thread, until its request's head (the request line and headers) has
  arrived, and is closed if that takes over `idle_timeout` seconds (gunicorn's keep-alive
  timeout, which also closes a kept-alive connection left idle that long): a client sending
  its request a byte at a time costs a socket, never a thread. After that every read and
  write gives up after `IO_TIMEOUT_S` (gunicorn's block without a limit): a request body that
  stalls, a phone gone from the Wi-Fi mid-request, a browser that stops reading its live
  readings, each holds its thread that long at most. A live browser is never silent that
  long, as Socket.IO pings it every 10 s (webui.make_socketio). Each open Socket.IO
  websocket holds a thread, so `threads` is also how many browsers can be live at once;
- Socket.IO's requests (a websocket, or a long poll before it) may hold at most four
  fifths of the threads (`live_limit`): the rest stay for pages and the API, so a crowd of
  browsers, or of connections pretending to be browsers, cannot starve the page; a browser
  over the limit gets 503 and its Socket.IO client tries again later;
- SIGTERM and SIGINT stop it gracefully: the browsers are disconnected first (they
  reconnect to the next bridge, or to this one when it is back), each websocket's
  connection ended once its closing frame went out, requests in progress get up to 10 s,
  then `serve` returns and the caller stops the ingest in order;
- SIGHUP calls `on_hup` (the bridge rereads its alert rules).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from functools import partial
from types import FrameType
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.sock import TCPSocket
from gunicorn.workers.gthread import TConn, ThreadWorker

log = logging.getLogger(__name__)

# How long requests in progress may run on when the bridge stops (gunicorn's graceful timeout).
STOP_GRACE_S = 10
# The longest one read or write on a connection may wait (one whole sendall: a 300 KB page
# at 15 KB/s). Longer than Socket.IO's ping interval, so a live browser is never cut.
IO_TIMEOUT_S = 20
THREAD_STACK = 1024 * 1024
# A request line and headers longer than this are handed to gunicorn, which refuses them.
MAX_HEAD = 64 * 1024


class ClientTooSlow(ConnectionResetError):
    """A read or write on a client's connection that did not finish within IO_TIMEOUT_S."""


# A send on a socket gunicorn has closed, raised as a broken pipe: when a browser goes,
# Socket.IO's request returns and gunicorn closes the connection, while engine.io's writer
# thread may still send the websocket's closing frame. simple-websocket takes a broken pipe
# there for the end it is, but not EBADF, which would end that thread with a traceback.
CLOSED_ALREADY = "the connection is closed already"
# The first byte of a websocket's closing frame.
WEBSOCKET_CLOSE = b"\x88"
# When the bridge stops, how long the closing frames sent to the browsers may take to go out
# before their connections are ended anyway.
CLOSE_FRAMES_S = 2


class TimedSocket(socket.socket):
    """A client's socket whose blocking mode has a timeout, and whose timeout is a reset.

    gunicorn switches each connection to blocking mode before it reads a request; here that
    means blocking for at most IO_TIMEOUT_S. A timeout is raised as ClientTooSlow, a
    ConnectionResetError, which gunicorn and simple-websocket both treat as the client gone
    (a plain timeout would be logged by gunicorn as an error with a traceback); raised while
    the application reads a request body, the client gets 408.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set once nothing more is sent on it: a websocket's closing frame went out, or it closed.
        self.done_sending = threading.Event()

    def setblocking(self, flag: bool) -> None:
        if flag:
            self.settimeout(IO_TIMEOUT_S)
        else:
            super().setblocking(False)

    def recv(self, *args: Any) -> bytes:
        try:
            return super().recv(*args)
        except TimeoutError as exc:
            raise ClientTooSlow(errno.ECONNRESET, "no data from the client in time") from exc

    def send(self, data: Any, *args: Any) -> int:
        with _sending():
            sent = super().send(data, *args)
        self._sent(data)
        return sent

    def sendall(self, data: Any, *args: Any) -> None:
        with _sending():
            super().sendall(data, *args)
        self._sent(data)

    def _sent(self, data: Any) -> None:
        # simple-websocket sends each closing frame (FIN and opcode 8: 0x88) in a send of its own.
        if bytes(data[:1]) == WEBSOCKET_CLOSE:
            self.done_sending.set()

    def close(self) -> None:
        # Another thread may be blocked reading this socket (simple-websocket's reader, when
        # the server ended the websocket): close() alone does not wake it, shutdown() does.
        # Left blocked, it would read on until IO_TIMEOUT_S from a descriptor number that a
        # new connection may have taken meanwhile, and keep the process from exiting.
        if self.fileno() != -1:
            with contextlib.suppress(OSError):  # not connected, or the client reset it
                self.shutdown(socket.SHUT_RDWR)
        super().close()
        self.done_sending.set()


@contextlib.contextmanager
def _sending() -> Iterator[None]:
    """A send's errors as the client's: too slow (a timeout), or gone (EBADF, see CLOSED_ALREADY)."""
    try:
        yield
    except TimeoutError as exc:
        raise ClientTooSlow(errno.ECONNRESET, "the client did not read in time") from exc
    except OSError as exc:
        if exc.errno != errno.EBADF:
            raise
        raise BrokenPipeError(errno.EPIPE, CLOSED_ALREADY) from exc


def live_limit(threads: int) -> int:
    """How many Socket.IO requests may be served at once with `threads` threads."""
    return max(1, threads - max(2, threads // 5))


class _LiveLimit:
    """WSGI middleware: at most `limit` Socket.IO requests at once, the rest answered 503;
    and the connections of the websockets open now, to end them when the bridge stops.

    A websocket's request lasts as long as the websocket (the worker's thread serves it all
    that time), a long poll up to Socket.IO's ping interval.
    """

    def __init__(self, app: Flask, limit: int) -> None:
        self._app = app
        self._limit = limit
        self._live = 0
        self._lock = threading.Lock()
        self._websockets: set[TimedSocket] = set()

    def end_websockets(self) -> None:
        """Once each websocket's closing frame went out (CLOSE_FRAMES_S at most), shut its
        connection down.

        Socket.IO's disconnect has each browser sent the closing frame (by the websocket's
        writer thread, a moment later), but the thread reading a websocket goes on reading
        until the browser answers, for ever if it sends a byte now and then and never
        answers: the bridge would never exit.
        """
        with self._lock:
            websockets = list(self._websockets)
        deadline = time.monotonic() + CLOSE_FRAMES_S
        for sock in websockets:
            sock.done_sending.wait(max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(OSError):  # closed or reset already
                sock.shutdown(socket.SHUT_RDWR)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not environ.get("PATH_INFO", "").startswith("/socket.io"):
            return self._app(environ, start_response)
        with self._lock:
            full = self._live >= self._limit
            if not full:
                self._live += 1
        if full:
            body = b'{"error": "too many live dashboards at once (SENSORPIPE_WEB_THREADS)"}'
            start_response(
                "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Retry-After", "5")],
            )
            return [body]
        websocket = environ.get("gunicorn.socket")
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket" and isinstance(websocket, TimedSocket):
            with self._lock:
                self._websockets.add(websocket)
        try:
            # The response is complete when this returns: a websocket has closed by then, and
            # Socket.IO's polls answer with one body.
            return self._app(environ, start_response)
        except OSError as exc:
            if exc.errno is not None:
                raise
            # engine.io raises a bare OSError when it sends on a websocket the browser has
            # closed (a page left during the upgrade answers its probe into the void), which
            # gunicorn would log as an error with a traceback: it is the client gone.
            raise ConnectionResetError(errno.ECONNRESET, "the browser closed the websocket") from exc
        finally:
            with self._lock:
                self._live -= 1
                self._websockets.discard(websocket)


class _Config(BaseApplication):  # type: ignore[misc]  # gunicorn has no type hints
    """gunicorn's settings and the WSGI application, as its worker expects them."""

    def __init__(self, wsgi: Any, options: dict[str, Any]) -> None:
        self._wsgi = wsgi
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._wsgi


class _Worker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's threaded worker without a master: signals and shutdown are the bridge's."""

    def __init__(self, *args: Any, on_stop: Callable[[], None], on_hup: Callable[[], object], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_stop = on_stop
        self._on_hup = on_hup
        self._stopping = False
        # Every client socket not yet garbage: those still open when the worker is done.
        self.client_sockets: weakref.WeakSet[TimedSocket] = weakref.WeakSet()

    def init_signals(self) -> None:
        super().init_signals()
        # gunicorn's worker exits at once on SIGINT (its master would then stop gracefully);
        # here Ctrl-C is the graceful stop, like SIGTERM.
        signal.signal(signal.SIGINT, self.handle_exit)
        signal.signal(signal.SIGHUP, lambda signum, frame: self._on_hup())

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if not self._stopping:
            self._stopping = True
            # Not in the signal handler: disconnecting takes locks a thread may hold.
            threading.Thread(target=self._on_stop, name="web-stop", daemon=True).start()

    def is_parent_alive(self) -> bool:
        return True  # no master to outlive: whoever started the bridge may exit before it

    def on_pending_socket_readable(self, conn: TConn, client: Any) -> None:
        if _gather_head(conn):
            super().on_pending_socket_readable(conn, client)

    def on_client_socket_readable(self, conn: TConn, client: Any) -> None:
        if _gather_head(conn):  # the next request on a kept-alive connection: the same rule
            super().on_client_socket_readable(conn, client)

    def handle(self, conn: TConn) -> Any:
        head = getattr(conn, "head", b"")
        if head:
            # What the poller gathered goes back in front of the socket for gunicorn's parser.
            conn.head = b""
            conn.sock.setblocking(True)
            conn.init()  # once per connection; on a kept-alive one it changes nothing
            conn.parser.unreader.unread(head)
        return super().handle(conn)

    def accept(self, listener: Any) -> None:
        """A new connection waits for its first bytes in the poller, not in a thread.

        gunicorn hands each new connection to a thread that waits up to 5 s for the request
        to start: a few hundred connections opened and left silent would hold every thread
        for those seconds and the dashboard would stall for everyone. Here they cost a
        socket each until `idle_timeout`, as a kept-alive connection does.
        """
        try:
            client, address = listener.accept()
        except OSError:
            return  # the client went away between the poller's event and accept()
        self.nr_conns += 1
        client = TimedSocket(client.family, client.type, client.proto, fileno=client.detach())
        self.client_sockets.add(client)
        conn = TConn(self.cfg, client, address, listener.getsockname())  # non-blocking
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))


def _gather_head(conn: TConn) -> bool:
    """Read what the client has sent, without blocking; True once its request's head is all
    there (or it closed, or sent more than a head may be): then a thread may take it.

    Until then the connection waits in the poller, and gunicorn closes it when its deadline
    (`idle_timeout` from when it was opened or last answered) passes: a client sending its
    request a byte at a time costs a socket, never a thread.
    """
    head: bytes = getattr(conn, "head", b"")
    try:
        data = conn.sock.recv(8192)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        data = b""  # reset: the thread's read sees the end and closes it
    conn.head = head + data
    return not data or b"\r\n\r\n" in conn.head or len(conn.head) > MAX_HEAD


def _request_timeout(error: ClientTooSlow) -> tuple[dict[str, str], int]:
    return {"error": f"the request's body did not arrive within {IO_TIMEOUT_S} s"}, 408


def serve(
    app: Flask,
    host: str,
    port: int,
    threads: int,
    idle_timeout: float,
    on_stop: Callable[[], None],
    on_hup: Callable[[], object],
) -> None:
    """Serve `app` on host:port until SIGTERM or SIGINT. Raises OSError if it cannot listen."""
    # A body that stopped coming: 408 (gunicorn then closes the connection, as the rest of
    # the body would be read as the next request), not a 500 with a traceback in the log.
    app.register_error_handler(ClientTooSlow, _request_timeout)
    # Each live browser takes two threads (the request's and simple-websocket's reader):
    # hundreds of 8 MiB stacks (Linux's default) would not fit a 32-bit Pi's address space.
    # 1 MiB is far more than a request here needs (set for the threads started from now on).
    threading.stack_size(THREAD_STACK)
    listener = socket.create_server((host, port), backlog=2048)  # OSError if the port is taken
    live = _LiveLimit(app, live_limit(threads))

    def stop_live() -> None:
        on_stop()  # the browsers are told first
        live.end_websockets()

    config = _Config(
        live,
        {
            "worker_class": "gthread",
            "threads": threads,
            # Open connections the worker keeps: live browsers, kept-alive and silent ones.
            "worker_connections": max(1000, 4 * threads),
            "keepalive": idle_timeout,
            "graceful_timeout": STOP_GRACE_S,
            "timeout": 0,  # no master watches the worker's heartbeat
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
            # Bodies are small here (a login, an alert rule); headers as a browser sends them.
            "limit_request_line": 8190,
        },
    )
    cfg = config.cfg
    glog = cfg.logger_class(cfg)
    sockets = [TCPSocket((host, port), cfg, glog, fd=listener.detach())]
    worker = _Worker(1, 0, sockets, config, 0, cfg, glog, on_stop=stop_live, on_hup=on_hup)
    worker.init_process()  # runs until the stop signal and the grace period are over
    _end_stragglers(worker.client_sockets)


def _end_stragglers(sockets: weakref.WeakSet[TimedSocket]) -> None:
    """Shut down the connections still open after the grace period.

    A thread blocked reading a connection (simple-websocket's reader, a request waiting for
    its body) is woken by shutdown(), not by close(), and would otherwise keep the process
    from exiting until its read times out (IO_TIMEOUT_S).
    """
    for sock in list(sockets):
        if sock.fileno() != -1:
            with contextlib.suppress(OSError):  # the client is gone already
                sock.shutdown(socket.SHUT_RDWR)
