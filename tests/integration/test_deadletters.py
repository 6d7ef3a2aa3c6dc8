"""Dead letters read back from Azurite in Event Grid's blob layout: oldest first by the path's (unpadded) date,
under the documented and the domain-prefixed paths, paged, confined to the subscription's tenant, a corrupt blob
skipped with a warning."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from shared.adapters.azure_blob import AzureBlobStore
from shared.adapters.deadletters import BlobDeadLetterReader
from shared.domain.delivery import (
    CLIENT_ERROR,
    MAX_ATTEMPTS_EXCEEDED,
    DeadLetter,
    dead_letter_blob_path,
    eventgrid_subscription_name,
    redelivery_topic,
)
from shared.domain.errors import InvalidInput
from shared.domain.events import PlatformEvent, Subscription
from shared.localhost.emulators import Azurite

pytestmark = pytest.mark.integration
DOMAIN = "aiaas-dom-test"


@pytest.fixture(scope="module")
def blobs(azurite: Azurite) -> AzureBlobStore:
    return AzureBlobStore.from_connection_string(azurite.connection_string)


@pytest.fixture
def container(blobs: AzureBlobStore) -> str:
    name = f"dl{uuid.uuid4().hex[:12]}"
    blobs.ensure_container(name)
    return name


def subscription(tenant: str = "acme") -> Subscription:
    return Subscription(tenant, uuid.uuid4().hex[:16], "https://hooks.example.com/x")


def letter(tenant: str, *, topic: str | None = None, reason: str = MAX_ATTEMPTS_EXCEEDED) -> DeadLetter:
    job = uuid.uuid4().hex[:12]
    event = PlatformEvent(
        id=uuid.uuid4().hex,
        event_type="AIaaS.Job.Succeeded",
        subject=f"/tenants/{tenant}/jobs/{job}",
        data={"jobId": job},
        event_time="2026-11-01T08:00:00.000Z",
        topic=tenant if topic is None else topic,
    )
    status = 400 if reason == CLIENT_ERROR else 503
    return DeadLetter(event, reason, 30, "Busy", status, "2026-11-01T09:00:00.000Z", "2026-11-01T08:00:00.100Z")


def write(
    blobs: AzureBlobStore,
    container: str,
    sub: Subscription,
    when: datetime,
    letters: list[DeadLetter],
    *,
    prefix: str = "",
) -> str:
    """A dead-letter blob as Event Grid writes it: a JSON array at <prefix>SUBNAME/Y/M/D/H/<guid>.json."""
    path = prefix + dead_letter_blob_path(eventgrid_subscription_name(sub.subscription_id), when, str(uuid.uuid4()))
    blobs.write_bytes(container, path, orjson.dumps([d.to_blob_item() for d in letters]))
    return path


def at(day: int, hour: int) -> datetime:
    return datetime(2026, 11, day, hour, 5, tzinfo=UTC)


def everything(reader: BlobDeadLetterReader, sub: Subscription, *, limit: int) -> tuple[list[DeadLetter], int]:
    letters, token, pages = [], None, 0
    while True:
        page, token = reader.list_dead_letters(sub, limit=limit, continuation=token)
        letters += page
        pages += 1
        if token is None:
            return letters, pages
        assert pages < 100, "the listing never ends"


def test_dead_letters_read_back_oldest_first_by_date_not_by_text(blobs: AzureBlobStore, container: str) -> None:
    sub = subscription()
    reader = BlobDeadLetterReader(blobs, container=container)
    # As text, ".../1/10/" sorts before ".../1/9/" and ".../10/1/" before ".../9/..": the date decides.
    ten, nine = letter("acme"), letter("acme")
    day_ten, day_nine = letter("acme"), letter("acme", reason=CLIENT_ERROR)
    write(blobs, container, sub, at(1, 10), [ten])
    write(blobs, container, sub, at(10, 1), [day_ten])
    write(blobs, container, sub, at(1, 9), [nine])
    write(blobs, container, sub, at(9, 23), [day_nine])

    listed, token = reader.list_dead_letters(sub)

    assert listed == [nine, ten, day_nine, day_ten]  # every field read back as written
    assert token is None
    assert listed[2].view()["deadLetterReason"] == CLIENT_ERROR and listed[2].last_http_status == 400


def test_domain_prefixed_paths_are_read_too(blobs: AzureBlobStore, container: str) -> None:
    sub = subscription("Acme-Corp")
    reader = BlobDeadLetterReader(blobs, container=container, domain=DOMAIN)
    plain, under_domain, under_topic = (letter("Acme-Corp") for _ in range(3))
    azure_topic = (
        f"/subscriptions/0000/resourceGroups/rg/providers/Microsoft.EventGrid/domains/{DOMAIN}/topics/acme-corp"
    )
    from_azure = letter("Acme-Corp", topic=azure_topic)  # Event Grid's full topic path, in another case
    twin = redelivery_topic(sub.tenant_id, sub.subscription_id)
    redelivered = letter("Acme-Corp", topic=twin)
    write(blobs, container, sub, at(3, 1), [plain])
    write(blobs, container, sub, at(3, 2), [under_domain], prefix=f"{DOMAIN.upper()}/")
    write(blobs, container, sub, at(3, 3), [under_topic, from_azure], prefix=f"{DOMAIN.upper()}/ACME-CORP/")
    write(blobs, container, sub, at(3, 4), [redelivered], prefix=f"{DOMAIN.upper()}/{twin.upper()}/")

    listed, _ = reader.list_dead_letters(sub)

    assert listed == [plain, under_domain, under_topic, from_azure, redelivered]


def test_paging_goes_through_every_record_once_across_blobs(blobs: AzureBlobStore, container: str) -> None:
    sub = subscription()
    reader = BlobDeadLetterReader(blobs, container=container)
    batches = [[letter("acme") for _ in range(n)] for n in (3, 1, 2)]
    for hour, batch in enumerate(batches):
        write(blobs, container, sub, at(2, hour), batch)
    expected = [d for batch in batches for d in batch]

    by_two, pages = everything(reader, sub, limit=2)
    by_one, single_pages = everything(reader, sub, limit=1)
    first, token = reader.list_dead_letters(sub, limit=4)

    assert by_two == expected and pages == 3
    assert by_one == expected and single_pages == 6
    assert first == expected[:4] and token is not None
    assert reader.list_dead_letters(sub, limit=4, continuation=token) == (expected[4:], None)


def test_another_tenants_event_in_the_blob_is_left_out(blobs: AzureBlobStore, container: str) -> None:
    sub = subscription("acme")
    reader = BlobDeadLetterReader(blobs, container=container, domain=DOMAIN)
    mine, theirs = letter("acme"), letter("globex")
    # Another tenant's topic, even with a subject that claims to be acme's.
    disguised = letter("acme", topic="globex")
    write(blobs, container, sub, at(4, 1), [theirs, mine, disguised])

    assert reader.list_dead_letters(sub) == ([mine], None)


def test_another_subscriptions_dead_letters_are_not_listed(blobs: AzureBlobStore, container: str) -> None:
    sub = subscription()
    # An id that extends this one's: its blobs share the name's beginning, not the folder.
    longer = Subscription("acme", sub.subscription_id + "0", sub.endpoint_url)
    reader = BlobDeadLetterReader(blobs, container=container)
    mine = letter("acme")
    write(blobs, container, sub, at(5, 1), [mine])
    write(blobs, container, longer, at(5, 1), [letter("acme")])

    assert reader.list_dead_letters(sub) == ([mine], None)


def test_a_corrupt_blob_is_skipped_with_a_warning(
    blobs: AzureBlobStore, container: str, caplog: pytest.LogCaptureFixture
) -> None:
    sub = subscription()
    reader = BlobDeadLetterReader(blobs, container=container)
    before, after = letter("acme"), letter("acme")
    write(blobs, container, sub, at(6, 1), [before])
    name = eventgrid_subscription_name(sub.subscription_id).upper()
    blobs.write_bytes(container, f"{name}/2026/11/6/2/broken.json", b'[{"id": "x", "eventTy')
    blobs.write_bytes(container, f"{name}/2026/11/6/3/object.json", b'{"not": "an array"}')
    blobs.write_bytes(container, f"{name}/2026/11/6/4/numbers.json", b"[1, 2]")
    blobs.write_bytes(container, f"{name}/not-a-date/stray.json", b"[]")
    write(blobs, container, sub, at(6, 5), [after])

    with caplog.at_level(logging.WARNING, logger="shared.adapters.deadletters"):
        listed, token = reader.list_dead_letters(sub)

    assert listed == [before, after] and token is None
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for path in ("6/2/broken.json", "6/3/object.json", "6/4/numbers.json", "not-a-date/stray.json"):
        assert path in warned


def test_no_container_means_no_dead_letters(blobs: AzureBlobStore) -> None:
    reader = BlobDeadLetterReader(blobs, container=f"missing{uuid.uuid4().hex[:8]}")
    assert reader.list_dead_letters(subscription()) == ([], None)


def test_a_token_this_listing_did_not_return_is_the_callers_mistake(blobs: AzureBlobStore, container: str) -> None:
    sub, other = subscription(), subscription()
    reader = BlobDeadLetterReader(blobs, container=container)
    write(blobs, container, other, at(7, 1), [letter("acme"), letter("acme")])
    _, others_token = reader.list_dead_letters(other, limit=1)
    assert others_token is not None

    for token in ("not base64 !", "bm9wZQ", others_token):
        with pytest.raises(InvalidInput):
            reader.list_dead_letters(sub, continuation=token)
