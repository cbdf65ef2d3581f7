"""A client that floods a new connection from its first byte and never reads is stopped
by TCP, not buffered: the server reads a socket only when its in-flight bound allows.

The client is another process, so that it sends as fast as the kernel takes bytes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import eventstore

FLOOD = 40_000  # requests of 10 kB: 400 MB if the server read them all
CLIENT = r"""
import socket, struct, sys
body = struct.pack(">hhih", 18, 0, 7, 10_000) + b"x" * 10_000  # ApiVersions v0, a long client id
frame = struct.pack(">i", len(body)) + body
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
sock.settimeout(2.0)
sent = 0
try:
    for sent in range(int(sys.argv[2])):  # bounded; ends far sooner when the server stops reading
        sock.sendall(frame)
    sent = int(sys.argv[2])
except OSError:
    pass
print(sent)
"""


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1024


def test_a_flood_from_the_first_byte_is_stopped_by_tcp(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "s", durability="none") as store, store.serve("127.0.0.1:0") as server:
        before = rss_mb()
        done = subprocess.run([sys.executable, "-c", CLIENT, str(server.address[1]), str(FLOOD)],
                              capture_output=True, text=True, timeout=120, check=True)
        sent = int(done.stdout.strip())
        grown = rss_mb() - before
    assert sent < FLOOD, "the server read every request of a client that reads no answer"
    assert grown < 150, f"the server's memory grew by {grown:.0f} MB"
