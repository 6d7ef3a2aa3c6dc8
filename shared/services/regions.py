"""Regional stamps: a tenant is served only by its home stamp; the global directory says which one that is."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from shared.domain.errors import AlreadyExists, WrongRegion
from shared.domain.regions import TenantHome
from shared.domain.tenants import validate_tenant_id
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
        now = self._clock()
        with self._lock:
            cached = self._homes.get(tenant_id)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        home = directory.home_of(tenant_id)
        if home is not None:
            with self._lock:
                self._homes[tenant_id] = (now, home)
                self._homes.move_to_end(tenant_id)
                while len(self._homes) > HOME_CACHE_ENTRIES:
                    self._homes.popitem(last=False)
        return home


def check_home(platform: Platform, tenant_id: str, cache: HomeCache) -> None:
    """Raises WrongRegion when the directory says the tenant lives in another region. A tenant the directory does
    not know is left to this stamp's own store (which refuses it if it is not here either)."""
    if platform.directory is None:
        return
    home = cache.home_of(platform.directory, tenant_id)
    if home is not None and home.region != platform.region:
        raise WrongRegion(
            f"tenant {tenant_id} is served by region {home.region} at {home.api_url}, not by {platform.region}",
            region=home.region,
            api_url=home.api_url,
        )


def place_tenant(platform: Platform, tenant_id: str, region: str | None = None) -> TenantHome | None:
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
    return held
