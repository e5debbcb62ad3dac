"""What the stock-client scripts beside this file share: a check that prints one line and
stops the script on failure, and a channel whose messages come from reflection v1alpha only
(no .proto files), as a client no one here wrote would find them."""

import sys

import grpc
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", flush=True)
        sys.exit(1)
    print(f"ok: {message}", flush=True)


def connect(address):
    """A plaintext channel to `address`, ready within 10 s, and a descriptor pool that asks
    the server's reflection v1alpha for what it needs."""
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=10)
    return channel, descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
