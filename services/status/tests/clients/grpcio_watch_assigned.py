"""A police CAD written before "opened and assigned" was one event, with Python's grpcio and
nothing but reflection (no .proto files): it follows DispatchService/WatchPoliceIncidents
without `compact_openings` and waits for one `assigned` change per track of an incident, as
such a client always has. Then it reconnects with the cursor of the first `assigned` update
and checks that the next update of the incident is the second `assigned`, not a repeat.

    python grpcio_watch_assigned.py ADDRESS DISPATCH_TOKEN CURSOR INCIDENT_ID

Prints one line per check; exits non-zero on the first that fails.
"""

import sys

from google.protobuf import message_factory

from stock import check, connect


def main():
    address, token, cursor, incident_id = sys.argv[1:5]
    channel, pool = connect(address)
    method = pool.FindServiceByName("helpgrid.v1.DispatchService").methods_by_name[
        "WatchPoliceIncidents"
    ]
    request_class = message_factory.GetMessageClass(method.input_type)
    update_class = message_factory.GetMessageClass(method.output_type)
    watch_call = channel.unary_stream(
        "/helpgrid.v1.DispatchService/WatchPoliceIncidents",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=update_class.FromString,
    )
    metadata = [("authorization", f"Bearer {token}")]

    def updates_of_incident(after):
        """The stream's updates about the incident, from the cursor `after`."""
        call = watch_call(request_class(cursor=after), metadata=metadata, timeout=20)
        for update in call:
            if update.event.incident.incident_id == incident_id:
                yield call, update

    # Wait for the incident to be assigned on every track, the old way.
    changes = []
    assigned = []
    for call, update in updates_of_incident(cursor):
        change = update.event.WhichOneof("change")
        changes.append(change)
        if change == "assigned":
            assigned.append((update.event.assigned, update.cursor, update.event.envelope.event_id))
        if len(assigned) == len(update.event.incident.assignments):
            call.cancel()
            break
    check(changes == ["opened", "assigned", "assigned"], f"changes of {incident_id} {','.join(changes)}")
    for a, _, _ in assigned:
        check(a.responder_id != "", f"assigned track {a.track} to {a.responder_id}")

    # Reconnect after the first `assigned`: the next update is the second one.
    for call, update in updates_of_incident(assigned[0][1]):
        call.cancel()
        change = update.event.WhichOneof("change")
        a = update.event.assigned
        check(
            change == "assigned" and update.event.envelope.event_id == assigned[1][2],
            f"resumed after the first assigned: {change} track {a.track} to {a.responder_id}, nothing repeated",
        )
        break


if __name__ == "__main__":
    main()
