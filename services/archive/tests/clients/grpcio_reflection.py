"""A stock gRPC client against the archive: Python's grpcio and grpcio-reflection, which ask
for reflection v1alpha, as older grpcurl, grpc_cli, Postman and Evans do.

    python grpcio_reflection.py ADDRESS

Lists the services through reflection v1alpha, finds the history and report methods through
the library's descriptor database (no .proto files), and checks that a method the server
does not offer answers UNIMPLEMENTED. Prints one line per check; exits non-zero on the first
that fails.
"""

import sys

import grpc
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", flush=True)
        sys.exit(1)
    print(f"ok: {message}", flush=True)


def main():
    address = sys.argv[1]
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=10)

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    services = sorted(s.name for a in answers for s in a.list_services_response.service)
    check(
        "helpgrid.v1.HistoryService" in services
        and "helpgrid.v1.ReportService" in services
        and "grpc.health.v1.Health" in services,
        f"reflection v1alpha lists the services: {services}",
    )

    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    history = sorted(m.name for m in pool.FindServiceByName("helpgrid.v1.HistoryService").methods)
    reports = sorted(m.name for m in pool.FindServiceByName("helpgrid.v1.ReportService").methods)
    check(len(history) > 0 and len(reports) > 0, f"methods: {history} {reports}")

    unknown = channel.unary_unary(
        "/helpgrid.v1.HistoryService/NoSuchMethod",
        request_serializer=lambda m: m,
        response_deserializer=lambda b: b,
    )
    try:
        unknown(b"", timeout=10)
        check(False, "an unknown method is refused")
    except grpc.RpcError as refused:
        check(
            refused.code() == grpc.StatusCode.UNIMPLEMENTED,
            f"unknown method: {refused.code()}",
        )


if __name__ == "__main__":
    main()
