"""A DHCPDISCOVER as a node's firmware sends it, and the OFFER it gets: for checking a boot network.

    python -m gpudc.lab.dhcp_probe IFACE MAC ARCH [--timeout S]

Broadcasts from UDP 68 on one interface (run it inside the namespace whose interface that is),
with option 93 = ARCH (e.g. 0x0007 x86-64 UEFI, 0x000B arm64 UEFI); prints the OFFER's yiaddr,
siaddr (next-server), boot file and vendor class as JSON, or exits 1 with "no offer". Five tries
of `--timeout / 5` seconds each: bounded.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import sys
import time


def discover(ifname: str, mac: str, arch: int, timeout: float = 3.0) -> dict[str, object] | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        s.bind(("0.0.0.0", 68))
        xid = random.getrandbits(32)
        chaddr = bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0")
        head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000,
                           bytes(4), bytes(4), bytes(4), bytes(4), chaddr, b"", b"")
        opts = b"\x63\x82\x53\x63" + bytes([53, 1, 1]) + bytes([93, 2]) + struct.pack("!H", arch)
        opts += bytes([94, 3, 1, 3, 16]) + bytes([55, 5, 1, 3, 6, 60, 67]) + bytes([255])
        for _ in range(5):
            s.sendto(head + opts, ("255.255.255.255", 67))
            deadline = time.monotonic() + timeout / 5
            while (left := deadline - time.monotonic()) > 0:
                s.settimeout(left)
                try:
                    data = s.recv(4096)
                except TimeoutError:
                    break
                if len(data) > 240 and data[0] == 2 and struct.unpack("!I", data[4:8])[0] == xid:
                    return _offer(data)
        return None
    finally:
        s.close()


def _offer(data: bytes) -> dict[str, object]:
    found: dict[int, bytes] = {}
    i = 240
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        code, length = data[i], data[i + 1]
        found[code] = data[i + 2:i + 2 + length]
        i += 2 + length
    return {"type": found.get(53, b"\0")[0], "yiaddr": socket.inet_ntoa(data[16:20]),
            "siaddr": socket.inet_ntoa(data[20:24]), "giaddr": socket.inet_ntoa(data[24:28]),
            "file": data[108:236].rstrip(b"\0").decode(errors="replace"),
            "vendor": found.get(60, b"").decode(errors="replace")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gpudc.lab.dhcp_probe", description=__doc__.split("\n")[0])
    p.add_argument("ifname")
    p.add_argument("mac")
    p.add_argument("arch", type=lambda v: int(v, 0), help="option 93 client architecture, e.g. 0x0007")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds in all (default 3)")
    args = p.parse_args(argv)
    offer = discover(args.ifname, args.mac, args.arch, args.timeout)
    if offer is None:
        print("no offer", file=sys.stderr)
        return 1
    print(json.dumps(offer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
