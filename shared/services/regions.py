"""Regional stamps: a tenant is served only by its home stamp; the global directory says which one that is."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from shared.domain.errors import AlreadyExists, WrongRegion
from shared.domain.regions import TenantHome
from shared.domain.tenants import validate_entra_tenant, validate_tenant_id
from shared.ports import TenantDirectory
from shared.services.platform import Platform

logger = logging.getLogger(__name__)

# A tenant's home never changes (tenants do not migrate between stamps), so a found home could be kept for ever;
# it is kept for HOME_CACHE_SECONDS so that an operator's repair of a wrong entry reaches every process soon.
# Misses are not cached: a tenant created a moment ago must be found on its first request.
HOME_CACHE_SECONDS = 300.0
HOME_CACHE_ENTRIES = 100_000


class HomeCache:
    """Per process: tenant id -> home, for HOME_CACHE_SECONDS; one directory read per tenant and period."""

    def __init__(self, ttl_seconds: float = HOME_CACHE_SECONDS, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl_seconds
        self._clock = clock
        self._homes: OrderedDict[str, tuple[float, TenantHome]] = OrderedDict()
        self._lock = threading.Lock()

    def home_of(self, directory: TenantDirectory, tenant_id: str) -> TenantHome | None:
        return self._cached(tenant_id, lambda: directory.home_of(tenant_id))

    def home_of_entra(self, directory: TenantDirectory, tid: str) -> TenantHome | None:
        return self._cached(f"tid:{tid}", lambda: directory.home_of_entra(tid))

    def _cached(self, key: str, read: Callable[[], TenantHome | None]) -> TenantHome | None:
        now = self._clock()
        with self._lock:
            cached = self._homes.get(key)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        home = read()
        if home is not None:
            with self._lock:
                self._homes[key] = (now, home)
                self._homes.move_to_end(key)
                while len(self._homes) > HOME_CACHE_ENTRIES:
                    self._homes.popitem(last=False)
        return home


def check_home(platform: Platform, tenant_id: str, cache: HomeCache) -> None:
    """Raises WrongRegion when the directory says the tenant lives in another region. A tenant the directory does
    not know is left to this stamp's own store (which refuses it if it is not here either)."""
    if platform.directory is None:
        return
    _refuse_elsewhere(platform, cache.home_of(platform.directory, tenant_id))


def check_entra_home(platform: Platform, tid: str, cache: HomeCache) -> None:
    """For a verified token whose tid acts for no tenant here: WrongRegion when it acts for one elsewhere."""
    if platform.directory is not None:
        _refuse_elsewhere(platform, cache.home_of_entra(platform.directory, tid))


def _refuse_elsewhere(platform: Platform, home: TenantHome | None) -> None:
    if home is not None and home.region != platform.region:
        raise WrongRegion(
            f"tenant {home.tenant_id} is served by region {home.region} at {home.api_url}, not by {platform.region}",
            region=home.region,
            api_url=home.api_url,
        )


def place_tenant(
    platform: Platform, tenant_id: str, region: str | None = None, *, entra_tenant: str | None = None
) -> TenantHome | None:
    """Records this stamp as the tenant's home in the directory, before the tenant is made here (a reservation:
    two stamps can never both become its home). Refuses a region other than this stamp's and a tenant already
    homed elsewhere. Returns the home, or None when this platform has no directory (unit tests)."""
    if region is not None and region != platform.region:
        raise AlreadyExists(
            f"this stamp serves region {platform.region}, not {region}: run `aiaas tenants create` with the "
            f"settings of region {region}'s stamp",
            code="WrongRegion",
        )
    if platform.directory is None:
        return None
    validate_tenant_id(tenant_id)  # nothing goes into the directory for an id no tenant can have
    held = platform.directory.place(TenantHome(tenant_id, platform.region, platform.api_url))
    if held.region != platform.region:
        raise AlreadyExists(f"tenant {tenant_id} already lives in region {held.region}", code="WrongRegion")
    if entra_tenant:  # so that any stamp can send the tid's tokens home too
        tid = validate_entra_tenant(entra_tenant)
        taken = platform.directory.place_entra(tid, held)
        if taken.tenant_id != tenant_id:
            raise AlreadyExists(f"Entra tenant {tid} already acts for tenant {taken.tenant_id}")
    return held
