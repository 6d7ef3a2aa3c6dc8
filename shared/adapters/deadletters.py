"""DeadLetterReader over the dead-letter container Event Grid (or the local broker) writes, in Event Grid's layout."""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

import orjson

from shared.domain.delivery import (
    DeadLetter,
    dead_letter_prefixes,
    eventgrid_subscription_name,
    redelivery_topic,
)
from shared.domain.errors import InvalidInput, NotFound
from shared.domain.events import PlatformEvent, Subscription
from shared.ports import BlobStore

logger = logging.getLogger(__name__)

# A blob's place in the listing: its UTC date and hour (from the path), then its name.
_SortKey = tuple[int, int, int, int, str]


def _encode_token(blob_name: str, index: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([blob_name, index])).decode().rstrip("=")


def _decode_token(token: str) -> tuple[str, int]:
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise InvalidInput("continuationToken is not one this listing returned") from None
    if (
        not isinstance(raw, list)
        or len(raw) != 2
        or not isinstance(raw[0], str)
        or not isinstance(raw[1], int)
        or raw[1] < 0
    ):
        raise InvalidInput("continuationToken is not one this listing returned")
    return raw[0], raw[1]


class BlobDeadLetterReader:
    """Reads a subscription's dead letters: `<prefix><Y>/<M>/<D>/<H>/<guid>.json` blobs, each a JSON array of
    Event Grid dead-letter records, in the platform account's `container`. `domain` is the Event Grid domain's name
    (Azure), under which Event Grid puts a domain topic subscription's dead letters; None locally."""

    def __init__(self, blobs: BlobStore, *, container: str, domain: str | None = None) -> None:
        self._blobs = blobs
        self._container = container
        self._domain = domain

    def list_dead_letters(
        self, subscription: Subscription, *, limit: int = 100, continuation: str | None = None
    ) -> tuple[list[DeadLetter], str | None]:
        """Oldest first (by the hour in the path, then blob name, then the record's place in its blob); the
        token names the next record's blob and index, so a page never repeats or skips one."""
        limit = max(1, limit)
        prefixes = self._prefixes(subscription)
        start: tuple[_SortKey, str, int] | None = None
        if continuation:
            name, index = _decode_token(continuation)
            key = _sort_key(name, prefixes)
            if key is None:
                raise InvalidInput("continuationToken is not one this listing returned")
            start = (key, name, index)
        letters: list[DeadLetter] = []
        for key, name in self._blobs_in_order(prefixes):
            skip = 0
            if start is not None:
                if key < start[0]:
                    continue
                if name == start[1]:
                    skip = start[2]
            for index, letter in self._read(name, subscription.tenant_id, subscription.subscription_id):
                if index < skip:
                    continue
                if len(letters) == limit:
                    return letters, _encode_token(name, index)
                letters.append(letter)
        return letters, None

    def _prefixes(self, subscription: Subscription) -> list[str]:
        name = eventgrid_subscription_name(subscription.subscription_id)
        prefixes = dead_letter_prefixes(name, domain=self._domain, topic=subscription.tenant_id)
        # The subscription's twin on its redelivery topic has the same name; its dead letters sit under that topic.
        twin = redelivery_topic(subscription.tenant_id, subscription.subscription_id)
        prefixes += dead_letter_prefixes(name, domain=self._domain, topic=twin)
        return list(dict.fromkeys(prefixes))

    def _blobs_in_order(self, prefixes: list[str]) -> list[tuple[_SortKey, str]]:
        found: dict[str, _SortKey] = {}
        for prefix in prefixes:
            for info in self._blobs.list_blobs(self._container, prefix=prefix):
                key = _sort_key(info.name, prefixes)
                if key is None:
                    logger.warning("dead-letter blob %s is not in Event Grid's layout; skipped", info.name)
                    continue
                found[info.name] = key
        # The path's month, day and hour are not zero padded (9 sorts after 10 as text): sort by their numbers.
        return sorted((key, name) for name, key in found.items())

    def _read(self, name: str, tenant_id: str, subscription_id: str) -> list[tuple[int, DeadLetter]]:
        """The blob's records that are the tenant's, with their index in the blob; a corrupt blob (or record) is
        skipped with a warning, never an error for the caller."""
        try:
            raw: Any = orjson.loads(self._blobs.read_bytes(self._container, name))
        except NotFound:
            return []  # deleted since the listing
        except orjson.JSONDecodeError as err:
            logger.warning("dead-letter blob %s is not JSON (%s); skipped", name, err)
            return []
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list):
            logger.warning("dead-letter blob %s is not a JSON array; skipped", name)
            return []
        kept: list[tuple[int, DeadLetter]] = []
        for index, item in enumerate(raw):
            try:
                letter = DeadLetter.from_blob_item(item)
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                logger.warning(
                    "dead-letter blob %s record %d is not a dead-letter record (%r); skipped", name, index, err
                )
                continue
            if _belongs(letter.event, tenant_id, subscription_id):
                kept.append((index, letter))
            else:
                logger.warning("dead-letter blob %s record %d is another tenant's event; left out", name, index)
        return kept


def _sort_key(name: str, prefixes: list[str]) -> _SortKey | None:
    """(year, month, day, hour, name) of a blob under one of the prefixes, or None when its path is not
    `<prefix>Y/M/D/H/<file>`. The longest prefix is tried first: a shorter one could be a domain's name."""
    for prefix in sorted(prefixes, key=len, reverse=True):
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix) :].split("/")
        if len(parts) != 5 or not parts[4]:
            continue
        try:
            year, month, day, hour = (int(p) for p in parts[:4])
        except ValueError:
            continue
        return (year, month, day, hour, name)
    return None


def _belongs(event: PlatformEvent, tenant_id: str, subscription_id: str) -> bool:
    """Whether a dead-lettered event is the tenant's: its topic names the tenant's domain topic (a bare name
    locally, the domain topic's resource path in Azure, the subscription's redelivery topic after a redelivery);
    without a topic, its subject is the tenant's."""
    topic = event.topic.strip().rstrip("/")
    if topic:
        last = topic.rsplit("/", 1)[-1]
        if "/" in topic and "/topics/" not in topic.lower():
            return event.subject.startswith(f"/tenants/{tenant_id}/")
        # Event Grid topic names are case-insensitive (a resource path may come back in another case).
        return last.lower() in (tenant_id.lower(), redelivery_topic(tenant_id, subscription_id).lower())
    return event.subject.startswith(f"/tenants/{tenant_id}/")
