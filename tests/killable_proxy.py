"""A TCP proxy that a test closes the way a killed server goes: its Prefect server's API, killed
without killing the session's harness behind it."""

from __future__ import annotations

import socket
import threading


class KillableProxy:
    """Forwards 127.0.0.1:<port> to `upstream`; `kill()` closes it the way a killed server goes."""

    def __init__(self, upstream: tuple[str, int], port: int = 0) -> None:
        """`port`: the port of a proxy killed before, to bring its server back (0: a free one)."""
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.requests: list[bytes] = []  # the request line of every request forwarded (HTTP/1.1)
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.upstream)
            except OSError:
                return
            with self.lock:
                self.sockets += [client, server]
            for source, sink, requests in ((client, server, self.requests), (server, client, None)):
                threading.Thread(target=self._pump, args=(source, sink, requests), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, requests: list[bytes] | None = None) -> None:
        methods = (b"GET ", b"POST ", b"PUT ", b"PATCH ", b"DELETE ")
        try:
            while data := source.recv(65536):
                if requests is not None and data.startswith(methods):
                    requests.append(data.split(b"\r\n", 1)[0])
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def kill(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for end in self.sockets:
                try:
                    end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    # A close alone does not end a connection whose pump thread is blocked in recv():
                    # that recv holds the socket open, so a request in flight (a runner's poll) hung
                    # until its client's 60 s timeout, as no killed server's does. The shutdown wakes
                    # the recv and ends the connection; the close then resets it (linger 0).
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                try:
                    end.close()  # linger 0: a reset, as from a process that died
                except OSError:
                    pass
