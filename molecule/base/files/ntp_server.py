"""Minimal NTP server for the base scenario (peer 10.89.10.20, UDP 123).

Answers client-mode (3) requests with a stratum-2 server-mode (4) reply carrying the peer's
clock, so chrony on the instance can select it as its source. Only test-network clients reach it.
"""
import socket
import struct
import time

NTP_EPOCH_OFFSET = 2208988800


def ntp_timestamp(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("!II", whole + NTP_EPOCH_OFFSET, int((seconds - whole) * 2**32))


def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 123))
    while True:
        request, client = sock.recvfrom(1024)
        received = time.time()
        if len(request) < 48 or request[0] & 0x07 != 3:
            continue
        version = (request[0] >> 3) & 0x07
        reply = struct.pack("!BBbb", (version << 3) | 4, 2, request[2], -20)
        reply += struct.pack("!II", 0x10, 0x10)  # root delay and dispersion: ~0.2 ms
        reply += socket.inet_aton("10.89.10.1")  # reference id (an upstream address)
        reply += ntp_timestamp(received - 16)  # reference time: last "update"
        reply += request[40:48]  # origin: the client's transmit timestamp
        reply += ntp_timestamp(received)
        reply += ntp_timestamp(time.time())
        sock.sendto(reply, client)


if __name__ == "__main__":
    main()
