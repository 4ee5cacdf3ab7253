"""The key store the door authenticates with: the fleet's virtual keys, in its Redis."""

from __future__ import annotations

from gateway_client.gateway import ModelGateway
from gateway_core.virtual_keys import VirtualKeyStore


def key_store(gateway: ModelGateway) -> VirtualKeyStore:
    return VirtualKeyStore(gateway.redis)
