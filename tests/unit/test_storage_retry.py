"""Storage clients retry Azurite every second (it comes back within seconds of a restart); real accounts keep the
SDK's back-off."""

from __future__ import annotations

from azure.storage.blob import LinearRetry

from shared.adapters.azure_blob import AzureBlobStore, loopback_retry
from shared.adapters.storage_queue import StorageQueueJobQueue
from shared.config import azurite_connection_string

AZURITE = azurite_connection_string("127.0.0.1", 10000, 10001, 10002)
REAL = "DefaultEndpointsProtocol=https;AccountName=aiaasweu01;AccountKey=eA==;EndpointSuffix=core.windows.net"


def test_azurite_clients_retry_every_second_for_half_a_minute() -> None:
    policy = loopback_retry(AZURITE)["retry_policy"]
    assert isinstance(policy, LinearRetry) and (policy.backoff, policy.total_retries) == (1, 30)
    store = AzureBlobStore.from_connection_string(AZURITE)
    assert any(isinstance(p, LinearRetry) for p in store._service._pipeline._impl_policies)
    queue = StorageQueueJobQueue(AZURITE, "shards")
    assert any(isinstance(p, LinearRetry) for p in queue._queue._pipeline._impl_policies)


def test_a_real_account_keeps_the_sdks_policy() -> None:
    assert loopback_retry(REAL) == {}
    # One endpoint elsewhere than loopback: not Azurite, the SDK's policy.
    mixed = AZURITE.replace("http://127.0.0.1:10001/devstoreaccount1", "https://aiaasweu01.queue.core.windows.net")
    assert mixed != AZURITE and loopback_retry(mixed) == {}
    store = AzureBlobStore.from_connection_string(REAL)
    assert not any(isinstance(p, LinearRetry) for p in store._service._pipeline._impl_policies)
