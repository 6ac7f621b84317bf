#!/usr/bin/env python3
"""A proxyless gRPC client for the end-to-end tests: gRPC's own xDS resolver and balancer
(grpcio, bootstrap in $GRPC_XDS_BOOTSTRAP) call mesh-echo's EchoService at an `xds:///` target.

Stubs are generated at start from tests/proto/echo.proto with grpcio-tools into a temporary
directory. Each call prints one JSON line on stdout:
  {"seq": N, "ok": true, "ms": 1.2, "reply": {"name": ..., "version": ..., "local": ..., ...}}
  {"seq": N, "ok": false, "ms": 1.2, "code": "UNAVAILABLE", "details": "..."}
With --calls N it makes N calls and exits 0 when all succeeded, 1 otherwise. With --duration S
it calls every --interval seconds for S seconds and exits 0.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO = os.path.join(HERE, "..", "proto", "echo.proto")


def load_stubs(proto):
    out = tempfile.mkdtemp(prefix="echo-stubs-")
    include = os.path.dirname(os.path.abspath(proto))
    grpc_include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main([
        "protoc", "-I", include, "-I", grpc_include,
        "--python_out", out, "--grpc_python_out", out, os.path.basename(proto),
    ])
    if rc != 0:
        sys.exit(f"protoc failed on {proto} ({rc})")
    sys.path.insert(0, out)
    import echo_pb2  # noqa: E402
    import echo_pb2_grpc  # noqa: E402
    return echo_pb2, echo_pb2_grpc


def emit(line):
    sys.stdout.write(json.dumps(line, sort_keys=True) + "\n")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", help="e.g. xds:///reviews.default.svc.cluster.local:7070")
    ap.add_argument("--calls", type=int, default=None)
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--timeout", type=float, default=10.0, help="deadline of each call")
    ap.add_argument("--message", default="proxyless")
    ap.add_argument("--proto", default=DEFAULT_PROTO)
    args = ap.parse_args()
    if not os.environ.get("GRPC_XDS_BOOTSTRAP") and args.target.startswith("xds:"):
        sys.exit("GRPC_XDS_BOOTSTRAP is not set")
    pb, pb_grpc = load_stubs(args.proto)
    channel = grpc.insecure_channel(args.target)
    stub = pb_grpc.EchoServiceStub(channel)
    seq = 0
    failed = 0
    deadline = time.monotonic() + args.duration if args.duration is not None else None
    while True:
        if args.calls is not None and seq >= args.calls:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        start = time.monotonic()
        line = {"seq": seq}
        try:
            # wait_for_ready: the first call waits for xDS resolution instead of failing fast.
            reply = stub.Echo(pb.EchoRequest(message=args.message), timeout=args.timeout,
                              wait_for_ready=True)
            line["ok"] = True
            line["reply"] = {
                "message": reply.message, "name": reply.name, "version": reply.version,
                "hostname": reply.hostname, "protocol": reply.protocol, "method": reply.method,
                "authority": reply.authority, "peer": reply.peer, "local": reply.local,
                "port": reply.port,
            }
        except grpc.RpcError as e:
            failed += 1
            line["ok"] = False
            line["code"] = e.code().name if e.code() else "UNKNOWN"
            line["details"] = e.details() or ""
        line["ms"] = round((time.monotonic() - start) * 1000, 3)
        line["t"] = round(time.time(), 3)
        emit(line)
        seq += 1
        if args.calls is None or seq < args.calls:
            time.sleep(args.interval)
    channel.close()
    return 1 if (args.calls is not None and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
