"""A real TCP proxy in front of a real server, whose link a test can cut and restore.

Cutting closes every open connection and makes new ones fail, which is what a client sees when
a database host goes away. Blackholing keeps every connection open and accepts new ones, but
forwards nothing either way: what a dropped route, a dead NAT entry or a frozen server looks
like to a client. The server itself keeps running for the other tests.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closing = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """The host is gone: drop every connection and refuse new ones."""
        self._up.clear()
        with self._lock:
            for sock in list(self._sockets):
                _close(sock)
            self._sockets.clear()

    def blackhole(self) -> None:
        """Keep every connection open and accept new ones, but forward nothing."""
        self._forwarding.clear()

    def restore(self) -> None:
        self._forwarding.set()
        self._up.set()

    def close(self) -> None:
        self._closing = True
        self.cut()
        _close(self._listener)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                _close(client)
                continue
            if not self._forwarding.is_set():
                with self._lock:
                    self._sockets.add(client)
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _swallow(self, client: socket.socket) -> None:
        """A connection accepted while blackholed: read and drop whatever the client sends."""
        self._pipe(client, None)

    def _pipe(self, source: socket.socket, sink: socket.socket | None) -> None:
        try:
            while data := source.recv(65536):
                if sink is not None and self._forwarding.is_set():
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            if sink is not None:
                _close(sink)
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)  # type: ignore[arg-type]


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
