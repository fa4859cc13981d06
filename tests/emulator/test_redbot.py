"""REDbot, an HTTP linter, finds nothing above a note in the emulator's authenticated GETs of a
listing and a resource (see redbot_lint; `make redbot` runs the same against `emulator serve`)."""

from __future__ import annotations

from tests.conftest import Org
from tests.emulator.redbot_lint import check, findings, observations, targets


def test_redbot_has_nothing_but_notes_on_listings_and_resources(org: Org) -> None:
    access = org.token()
    urls = targets(org.base_url, access)
    listings, resources = urls[0::2], urls[1::2]
    assert len(listings) == len(resources) == 2
    for url in urls:
        resource = check(url, access)
        assert resource.fetch_error is None and resource.response.status_code == 200, url
        found = observations(url, resource)
        assert found, url  # REDbot did look: it always has notes (Date, Content-Length, caching)
        assert findings(found) == [], "\n".join(map(str, findings(found)))
        if url in resources:
            # A resource: REDbot's active If-None-Match check ran and was answered with a 304.
            assert resource.inm_support, url
