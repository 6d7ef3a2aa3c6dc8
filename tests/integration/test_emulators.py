"""Integration tests: the local stand-ins start, speak the Azure protocols the SDKs use, and stop cleanly."""

from __future__ import annotations

import errno
import http.client
import os
import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core import MatchConditions
from azure.cosmos import ContainerProxy, PartitionKey, exceptions
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from shared.adapters.cosmos_client import is_loopback_endpoint, make_cosmos_client
from shared.localhost.emulators import Azurite, CosmosServer, _port_is_free, free_port

pytestmark = pytest.mark.integration


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it has no cmdline any more.
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() == b""
    except FileNotFoundError:
        return True


# -- Azurite -------------------------------------------------------------------------------------------


def test_blob_upload_download(azurite: Azurite) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.get_container_client(f"c{uuid.uuid4().hex[:12]}")
    container.create_container()
    payload = os.urandom(3 * 1024 * 1024 + 17)  # large enough for a multi-block upload
    container.upload_blob("inputs/batch.jsonl", payload, overwrite=True)
    assert container.download_blob("inputs/batch.jsonl").readall() == payload
    assert [b.name for b in container.list_blobs(name_starts_with="inputs/")] == ["inputs/batch.jsonl"]


def test_queue_send_receive(azurite: Azurite) -> None:
    queue = QueueClient.from_connection_string(azurite.connection_string, f"q{uuid.uuid4().hex[:12]}")
    queue.create_queue()
    queue.send_message('{"jobId": "j1"}')
    messages = list(queue.receive_messages(max_messages=5, visibility_timeout=30))
    assert [m.content for m in messages] == ['{"jobId": "j1"}']
    queue.delete_message(messages[0])
    assert list(queue.receive_messages(max_messages=5)) == []


def test_azurite_connection_string_points_at_started_ports(azurite: Azurite) -> None:
    assert f":{azurite.blob_port}/devstoreaccount1" in azurite.connection_string
    assert f":{azurite.queue_port}/devstoreaccount1" in azurite.connection_string
    assert azurite.blob_endpoint.startswith("http://127.0.0.1:")


# -- Cosmos stand-in ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jobs_container(cosmos: CosmosServer) -> Iterator[ContainerProxy]:
    client = make_cosmos_client(cosmos.endpoint, cosmos.key)
    database = client.create_database_if_not_exists(f"db{uuid.uuid4().hex[:8]}")
    container = database.create_container_if_not_exists(
        "jobs",
        partition_key=PartitionKey(path=["/tenantId", "/jobId"], kind="MultiHash"),
        indexing_policy={
            "indexingMode": "consistent",
            "includedPaths": [{"path": "/*"}],
            "excludedPaths": [{"path": "/results/*"}, {"path": '/"_etag"/?'}],
        },
    )
    yield container
    client.delete_database(database.id)


def test_cosmos_client_targets_loopback(cosmos: CosmosServer) -> None:
    assert is_loopback_endpoint(cosmos.endpoint)
    assert not is_loopback_endpoint("https://myaccount.documents.azure.com:443/")
    client = make_cosmos_client(cosmos.endpoint, cosmos.key)
    assert client.get_database_account().WritableLocations


def test_hierarchical_pk_upsert_read_query(jobs_container: ContainerProxy) -> None:
    tenant, job = "tenant-a", f"job-{uuid.uuid4().hex[:8]}"
    for page, first in enumerate((2000, 0, 1000)):
        results = [{"recordIndex": first + i, "label": "ok", "score": 0.5} for i in range(1000)]
        jobs_container.upsert_item(
            {
                "id": f"{job}:page:{page}",
                "tenantId": tenant,
                "jobId": job,
                "firstRecordIndex": first,
                "results": results,
            }
        )
    # Another job in the same tenant must not leak into the query.
    jobs_container.upsert_item({"id": "other:page:0", "tenantId": tenant, "jobId": "other", "firstRecordIndex": 5})

    doc = jobs_container.read_item(f"{job}:page:1", partition_key=[tenant, job])
    assert doc["firstRecordIndex"] == 0
    assert len(doc["results"]) == 1000

    query = "SELECT * FROM c WHERE c.tenantId = @tenantId AND c.jobId = @jobId ORDER BY c.firstRecordIndex"
    params: list[dict[str, object]] = [
        {"name": "@tenantId", "value": tenant},
        {"name": "@jobId", "value": job},
    ]
    pages = list(jobs_container.query_items(query, parameters=params, partition_key=[tenant, job]))
    assert [p["firstRecordIndex"] for p in pages] == [0, 1000, 2000]

    count_query = "SELECT VALUE COUNT(1) FROM c WHERE c.tenantId = @tenantId AND c.jobId = @jobId"
    counts: list[object] = list(jobs_container.query_items(count_query, parameters=params, partition_key=[tenant, job]))
    assert counts == [3]

    pager = jobs_container.query_items(
        query, parameters=params, partition_key=[tenant, job], max_item_count=2
    ).by_page()
    first_page = list(next(pager))
    token = pager.continuation_token  # type: ignore[attr-defined]
    assert [p["firstRecordIndex"] for p in first_page] == [0, 1000]
    assert token
    resumed = jobs_container.query_items(
        query, parameters=params, partition_key=[tenant, job], max_item_count=2
    ).by_page(token)
    assert [p["firstRecordIndex"] for p in next(resumed)] == [2000]


def test_cosmos_missing_item_is_404(jobs_container: ContainerProxy) -> None:
    # The bare stand-in answers 500 here for hierarchical keys; cosmos_server.js patches it to 404.
    with pytest.raises(exceptions.CosmosResourceNotFoundError):
        jobs_container.read_item("does-not-exist", partition_key=["tenant-a", "nope"])


def test_cosmos_conditional_replace_and_create_conflict(jobs_container: ContainerProxy) -> None:
    key = ["tenant-b", f"job-{uuid.uuid4().hex[:8]}"]
    created = jobs_container.create_item({"id": f"{key[1]}:state", "tenantId": key[0], "jobId": key[1], "n": 0})
    etag = created["_etag"]
    replaced = jobs_container.replace_item(
        created["id"], {**created, "n": 1}, etag=etag, match_condition=MatchConditions.IfNotModified
    )
    assert replaced["n"] == 1
    with pytest.raises(exceptions.CosmosAccessConditionFailedError) as stale:
        jobs_container.replace_item(
            created["id"], {**created, "n": 2}, etag=etag, match_condition=MatchConditions.IfNotModified
        )
    assert stale.value.status_code == 412
    with pytest.raises(exceptions.CosmosResourceExistsError) as dup:
        jobs_container.create_item({"id": created["id"], "tenantId": key[0], "jobId": key[1]})
    assert dup.value.status_code == 409


def test_cosmos_keeps_connections_alive(cosmos: CosmosServer) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(cosmos.host, cosmos.port, timeout=5, context=context)
    try:
        for _ in range(3):  # several requests on one TLS connection
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            assert response.getheader("connection") == "keep-alive"
    finally:
        conn.close()


# -- lifecycle ------------------------------------------------------------------------------------------


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    with CosmosServer(data_dir=tmp_path / "cosmos", port=free_port()) as cosmos:
        cosmos_pid = cosmos.pid
        assert cosmos_pid is not None and cosmos.pid_file.is_file()
    azurite = Azurite(
        data_dir=tmp_path / "azurite", blob_port=free_port(), queue_port=free_port(), table_port=free_port()
    )
    azurite.start()
    azurite_pid = azurite.pid
    assert azurite_pid is not None
    azurite.stop()
    azurite.stop()  # idempotent

    assert _pid_gone(cosmos_pid)
    assert _pid_gone(azurite_pid)
    assert not cosmos.pid_file.exists()
    assert not azurite.pid_file.exists()


def test_start_kills_stale_process_from_pid_file(tmp_path: Path) -> None:
    first = CosmosServer(data_dir=tmp_path, port=free_port())
    first.start()
    stale_proc = first._proc
    assert stale_proc is not None
    # Simulate a crashed parent: the pid file remains, nobody owns the process.
    first._proc = None
    second = CosmosServer(data_dir=tmp_path, port=free_port())
    try:
        second.start()
        assert stale_proc.wait(timeout=10) is not None
        assert second.pid != stale_proc.pid
    finally:
        second.stop()
        if stale_proc.poll() is None:
            stale_proc.kill()
            stale_proc.wait()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    other = CosmosServer(data_dir=tmp_path / "b", port=port)
    with CosmosServer(data_dir=tmp_path / "a", port=port), pytest.raises(RuntimeError, match=r"in use"):
        other.start(timeout=10)
    assert other.pid is None


def _leave_time_wait_on(port: int) -> None:
    """What the last run leaves behind on Ctrl-C: the server closed its connections first, so their server-side
    sockets linger in TIME_WAIT on the port (for 60 s on Linux)."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()
        assert client.recv(1) == b""  # the server's FIN arrived
        client.close()


def test_a_stand_in_starts_on_a_port_the_last_run_left_in_time_wait(tmp_path: Path) -> None:
    port = free_port()
    _leave_time_wait_on(port)
    with socket.socket() as plain, pytest.raises(OSError) as refused:
        plain.bind(("127.0.0.1", port))  # the precondition: a bind without SO_REUSEADDR is refused now
    assert refused.value.errno == errno.EADDRINUSE
    assert _port_is_free("127.0.0.1", port)
    with CosmosServer(data_dir=tmp_path, port=port) as cosmos:
        assert cosmos.running


def test_refuses_non_loopback_host(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        CosmosServer(data_dir=tmp_path, host="0.0.0.0")
    with pytest.raises(ValueError, match="loopback"):
        Azurite(data_dir=tmp_path, host="10.1.2.3")
