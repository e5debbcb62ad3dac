"""A client we did not write: Python's grpcio with default settings calls NotifyService,
with messages built at run time from HelpGrid's published descriptor set (as a tool that
reads .proto files or reflection would). Used by tests/subscriptions.rs.

usage: grpc_client.py HOST:PORT DESCRIPTORS.fds ADMIN_TOKEN RESPONDER_TOKEN
"""
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

target, fds_path, admin_token, responder_token = sys.argv[1:5]
fds = descriptor_pb2.FileDescriptorSet()
with open(fds_path, "rb") as f:
    fds.ParseFromString(f.read())
pool = descriptor_pool.DescriptorPool()
for file in fds.file:
    pool.Add(file)


def message(name):
    descriptor = pool.FindMessageTypeByName("helpgrid.v1." + name)
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def method(name, request, response):
    return channel.unary_unary(
        "/helpgrid.v1.NotifyService/" + name,
        request_serializer=message(request).SerializeToString,
        response_deserializer=message(response).FromString,
    )


channel = grpc.insecure_channel(target)
put = method("PutSubscription", "PutSubscriptionRequest", "Subscription")
list_ = method("ListSubscriptions", "ListSubscriptionsRequest", "ListSubscriptionsResponse")
admin = [("authorization", "Bearer " + admin_token)]

request = message("PutSubscriptionRequest")()
sub = request.subscription
sub.subscription_id = "py-hook"
sub.url = "https://robot.example/send?key=abc"
sub.triggers.extend([2, 8])  # NOTIFY_TRIGGER_ASSIGNED, NOTIFY_TRIGGER_CLOSED
sub.template = 2  # WEBHOOK_TEMPLATE_WECOM_TEXT
sub.secret = "python-secret-0123456789"
stored = put(request, metadata=admin, timeout=10)
print(f"put {stored.subscription_id} has_secret={stored.has_secret} secret={stored.secret!r}")
listed = list_(message("ListSubscriptionsRequest")(), metadata=admin, timeout=10)
print("list", [s.subscription_id for s in listed.subscriptions])
try:
    put(request, metadata=[("authorization", "Bearer " + responder_token)], timeout=10)
    print("responder allowed?!")
except grpc.RpcError as error:
    print("responder", error.code().name)
sub.triggers[:] = []
try:
    put(request, metadata=admin, timeout=10)
    print("bad accepted?!")
except grpc.RpcError as error:
    print("bad", error.code().name)
# A method the service does not offer: UNIMPLEMENTED (clients fall back on that code), with a
# token or without one.
unknown = channel.unary_unary(
    "/helpgrid.v1.NotifyService/NoSuchMethod",
    request_serializer=lambda m: m,
    response_deserializer=lambda b: b,
)
for label, metadata in (("admin", admin), ("anonymous", [])):
    try:
        unknown(b"", metadata=metadata, timeout=10)
        print("unknown method answered?!")
    except grpc.RpcError as error:
        print("unknown", label, error.code().name)
