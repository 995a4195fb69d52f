"""Adds to synod's native counter exactly once per add, however often it retries.

A client of synod's counter session protocol (docs/counter-protocol.md) on grpcio:
a session is a lease kept alive in the background; each add carries the session, its
own sequence number and the lowest sequence still waiting for a reply, and is retried
with the same numbers on the next endpoint until a member answers. Run
scripts/python-counter-example.sh, which generates the gRPC stubs from synod's protos,
to try it against a local cluster.

usage: counter.py ENDPOINTS KEY COUNT [LOSE_EVERY]   (ENDPOINTS: host:port,host:port,...)
prints one line per add: "<sequence> <value>", then "final <value>". With LOSE_EVERY, the
reply to every LOSE_EVERY-th add is thrown away once and the add retried, as after a broken
connection: the fault test that shows a retry does not add twice.
"""

import sys
import threading
import time

import grpc

from etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.v1 import counter_pb2, counter_pb2_grpc

RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
}
ATTEMPT_TIMEOUT_S = 8
RETRY_TIMEOUT_S = 30


class LostReply(grpc.RpcError):
    """A reply thrown away on purpose, to show that the retry that follows is safe."""

    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "the reply was lost (injected)"


class Session:
    """A counter session on a lease, with retries across endpoints."""

    def __init__(self, endpoints, ttl=30):
        self.channels = [grpc.insecure_channel(e) for e in endpoints]
        self.preferred = 0
        self.next_sequence = 1
        self.unanswered = set()
        self.lock = threading.Lock()
        grant = self.call(lambda ch: rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(
            rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=ATTEMPT_TIMEOUT_S))
        self.lease = grant.ID
        self.ttl = grant.TTL
        self.stopped = threading.Event()
        threading.Thread(target=self.keep_alive, daemon=True).start()

    def call(self, attempt):
        """Runs attempt(channel) on the preferred member, moving on after retryable errors."""
        deadline = time.monotonic() + RETRY_TIMEOUT_S
        pause = 0.02
        while True:
            channel = self.channels[self.preferred % len(self.channels)]
            try:
                return attempt(channel)
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE or time.monotonic() + pause > deadline:
                    raise
                self.preferred += 1
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def keep_alive(self):
        while not self.stopped.wait(self.ttl / 3):
            try:
                self.call(lambda ch: next(rpc_pb2_grpc.LeaseStub(ch).LeaseKeepAlive(
                    iter([rpc_pb2.LeaseKeepAliveRequest(ID=self.lease)]), timeout=ATTEMPT_TIMEOUT_S)))
            except grpc.RpcError as error:
                print(f"keep-alive failed: {error.details()}", file=sys.stderr)

    def add(self, key, delta, lose_reply=False):
        with self.lock:
            sequence = self.next_sequence
            self.next_sequence += 1
            self.unanswered.add(sequence)
        try:
            def attempt(channel):
                with self.lock:
                    answered_below = min(self.unanswered)
                request = counter_pb2.AddRequest(key=key, delta=delta, session=self.lease,
                                                 sequence=sequence, answered_below=answered_below)
                reply = counter_pb2_grpc.CounterStub(channel).Add(request, timeout=ATTEMPT_TIMEOUT_S)
                if lost:
                    lost.pop()
                    raise LostReply()
                return reply
            lost = [True] if lose_reply else []
            return sequence, self.call(attempt).value
        finally:
            with self.lock:
                self.unanswered.discard(sequence)

    def close(self):
        self.stopped.set()
        try:
            self.call(lambda ch: rpc_pb2_grpc.LeaseStub(ch).LeaseRevoke(
                rpc_pb2.LeaseRevokeRequest(ID=self.lease), timeout=ATTEMPT_TIMEOUT_S))
        except grpc.RpcError:
            pass  # the lease expires on its own


def main():
    endpoints, key, count = sys.argv[1].split(","), sys.argv[2].encode(), int(sys.argv[3])
    lose_every = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    session = Session(endpoints)
    for i in range(1, count + 1):
        sequence, value = session.add(key, 1, lose_reply=lose_every > 0 and i % lose_every == 0)
        print(sequence, value, flush=True)
    session.close()
    value = session.call(lambda ch: counter_pb2_grpc.CounterStub(ch).Get(
        counter_pb2.GetRequest(key=key), timeout=ATTEMPT_TIMEOUT_S)).value
    print("final", value, flush=True)


if __name__ == "__main__":
    main()
