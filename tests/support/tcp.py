"""Linux's table of TCP sockets (/proc/net/tcp and tcp6, proc(5)), for tests that need
to see a connection from the other side: its state, and which process holds it."""

from pathlib import Path
from typing import Iterator, NamedTuple

from tests.support.platforms import require_proc

CLOSE_WAIT = 0x08  # the TCP state of a socket whose peer has closed, until its owner closes it too


class TcpSocket(NamedTuple):
    local_port: int
    remote_port: int
    state: int
    inode: int  # 0 until a process holds it (a connection still in a listen queue)


def tcp_sockets() -> Iterator[TcpSocket]:
    require_proc()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            yield TcpSocket(int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16),
                            int(fields[3], 16), int(fields[9]))
