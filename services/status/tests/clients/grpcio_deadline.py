"""A stock gRPC client with deadlines of its own (grpcio's `timeout=`, sent as `grpc-timeout`)
against a status service whose router does not answer.

    python grpcio_deadline.py ADDRESS TOKEN INCIDENT_ID

Messages are built from reflection (no .proto files). An Acknowledge with a 1.5 s deadline, on
a service whose own command timeout is longer, must come back UNAVAILABLE with the retry hint
before the deadline — not the client's own DEADLINE_EXCEEDED. An Acknowledge with a 150 ms
deadline is too short to send: the service answers DEADLINE_EXCEEDED itself, saying the
command was NOT sent. Prints one line per check (with the time each call took); exits
non-zero on the first that fails.
"""

import sys
import time

import grpc
from google.protobuf import message_factory

from stock import check, connect


def main():
    address, token, incident_id = sys.argv[1:4]
    channel, pool = connect(address)
    service = pool.FindServiceByName("helpgrid.v1.IncidentService")
    method = service.methods_by_name["Acknowledge"]
    acknowledge = channel.unary_unary(
        "/helpgrid.v1.IncidentService/Acknowledge",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=message_factory.GetMessageClass(method.output_type).FromString,
    )
    request_class = message_factory.GetMessageClass(method.input_type)
    metadata = [("authorization", f"Bearer {token}")]

    for deadline, request_id in ((1.5, "py-ack-1"), (0.15, "py-ack-2")):
        started = time.monotonic()
        try:
            acknowledge(
                request_class(incident_id=incident_id, request_id=request_id),
                metadata=metadata,
                timeout=deadline,
            )
            check(False, f"an Acknowledge nobody answers fails (deadline {deadline} s)")
        except grpc.RpcError as failed:
            took = time.monotonic() - started
            code, details = failed.code(), failed.details()
            if deadline > 1:
                check(
                    code == grpc.StatusCode.UNAVAILABLE
                    and "retry with the same request_id" in details
                    and took < deadline,
                    f"deadline {deadline} s: {code} after {took:.3f} s {details!r}",
                )
            else:
                check(
                    code == grpc.StatusCode.DEADLINE_EXCEEDED and "NOT sent" in details,
                    f"deadline {deadline} s: {code} after {took:.3f} s {details!r}",
                )


if __name__ == "__main__":
    main()
