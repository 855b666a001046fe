"""The listen queue is read from the kernel for TCP and for unix sockets (never a false 0)."""

import socket

from pfm import listenqueue


def test_unix_socket_queue_counts_waiting_connections(tmp_path):
    path = str(tmp_path / "q.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(7)
    clients = [socket.socket(socket.AF_UNIX) for _ in range(3)]
    for c in clients:
        c.connect(path)
    assert listenqueue.queue(server) == (3, 7)
    server.accept()[0].close()
    assert listenqueue.queue(server)[0] == 2
    for c in clients:
        c.close()
    server.close()


def test_tcp_queue_counts_waiting_connections():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(9)
    clients = [socket.create_connection(server.getsockname()) for _ in range(2)]
    assert listenqueue.queue(server) == (2, 9)
    for c in clients:
        c.close()
    server.close()


def test_unknown_socket_kind_is_unknown_not_zero():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    assert listenqueue.queue(a) == (None, None)
    a.close()
    b.close()
