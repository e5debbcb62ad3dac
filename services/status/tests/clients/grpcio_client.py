"""A stock gRPC client against the status service: Python's grpcio and grpcio-reflection,
which ask for reflection v1alpha, as older grpcurl, grpc_cli, Postman and Evans do.

    python grpcio_client.py ADDRESS TOKEN INCIDENT_ID HIDDEN_INCIDENT_ID HIDDEN_GRID

Finds the API through reflection alone (no .proto files), calls GetIncident on a visible
incident with a message class built from what reflection returned, checks that an incident
outside the token's grids is refused without naming its grid, that Escalate and the admin's
RevokeTokens (found by reflection too) refuse a console token with PERMISSION_DENIED, and that
a method the server does not offer answers UNIMPLEMENTED. Prints one line per check; exits non-zero on the first
that fails.
"""

import sys

import grpc
from google.protobuf import message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from stock import check, connect


def main():
    address, token, incident_id, hidden_id, hidden_grid = sys.argv[1:6]
    channel, pool = connect(address)

    # Reflection v1alpha by hand: list services.
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    services = sorted(s.name for a in answers for s in a.list_services_response.service)
    check(
        "helpgrid.v1.IncidentService" in services
        and "helpgrid.v1.DispatchService" in services
        and "helpgrid.v1.TokenService" in services
        and "grpc.health.v1.Health" in services,
        f"reflection v1alpha lists the services: {services}",
    )

    # The library's own client: a descriptor database over reflection v1alpha.
    service = pool.FindServiceByName("helpgrid.v1.IncidentService")
    methods = sorted(m.name for m in service.methods)
    check(
        "GetIncident" in methods and "Acknowledge" in methods and "Escalate" in methods,
        f"methods: {methods}",
    )

    get = service.methods_by_name["GetIncident"]
    request_class = message_factory.GetMessageClass(get.input_type)
    response_class = message_factory.GetMessageClass(get.output_type)
    call = channel.unary_unary(
        "/helpgrid.v1.IncidentService/GetIncident",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    metadata = [("authorization", f"Bearer {token}")]
    incident = call(request_class(incident_id=incident_id), metadata=metadata, timeout=10)
    check(incident.incident_id == incident_id, f"GetIncident returns {incident.incident_id}")

    try:
        call(request_class(incident_id=hidden_id), metadata=metadata, timeout=10)
        check(False, "an incident outside the token's grids is refused")
    except grpc.RpcError as refused:
        check(
            refused.code() == grpc.StatusCode.PERMISSION_DENIED
            and "not visible" in refused.details()
            and hidden_grid not in refused.details(),
            f"outside the token's grids: {refused.code()} {refused.details()!r}",
        )

    # Commands a console may not give, with messages built from reflection as well.
    tokens = pool.FindServiceByName("helpgrid.v1.TokenService")
    refused_calls = [
        (service.methods_by_name["Escalate"], {"incident_id": incident_id, "request_id": "py-1"}),
        (tokens.methods_by_name["RevokeTokens"], {"subject": "w-1", "reason": "lost phone"}),
    ]
    for method, fields in refused_calls:
        command = channel.unary_unary(
            f"/{method.containing_service.full_name}/{method.name}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=message_factory.GetMessageClass(method.output_type).FromString,
        )
        try:
            command(
                message_factory.GetMessageClass(method.input_type)(**fields),
                metadata=metadata,
                timeout=10,
            )
            check(False, f"{method.name} refuses a console token")
        except grpc.RpcError as refused:
            check(
                refused.code() == grpc.StatusCode.PERMISSION_DENIED,
                f"{method.name} with a console token: {refused.code()} {refused.details()!r}",
            )

    unknown = channel.unary_unary(
        "/helpgrid.v1.IncidentService/NoSuchMethod",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    for with_token in (True, False):
        try:
            unknown(b"", metadata=metadata if with_token else None, timeout=10)
            check(False, "an unknown method is refused")
        except grpc.RpcError as refused:
            check(
                refused.code() == grpc.StatusCode.UNIMPLEMENTED,
                f"unknown method (token: {with_token}): {refused.code()} {refused.details()!r}",
            )


if __name__ == "__main__":
    main()
