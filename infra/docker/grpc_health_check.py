"""Exit 0 when a gRPC server at HOST:PORT answers grpc.health.v1 Check with SERVING, else 1.

The tagger image's Docker/compose health check (Kubernetes uses its native ``grpc`` probe instead):

    python /opt/skilldistill/grpc_health_check.py 127.0.0.1:50051 [--service NAME] [--timeout 3]

The empty service name (the default) asks about the server as a whole, as Kubernetes' probe does.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(target: str, service: str = "", timeout: float = 3.0) -> str:
    """The serving status name (``SERVING``, ``NOT_SERVING``, ...) or the gRPC error code name."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="HOST:PORT")
    parser.add_argument("--service", default="", help="service name ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    status = check(args.target, args.service, args.timeout)
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
