"""What kind of pull of a tenant's directory a unit of work runs, named once instead of as loose booleans.

A walk of one Graph resource (users, groups with members, an enrichment listing) is a `Listing`: the changes
since a stored delta link, a complete listing compared with what the mirror holds, or the first listing of a
tenant the mirror holds nothing of, written straight in. A `Pull` is the unit of work's view across those walks:
whether it is the tenant's first sync, and so who flags the users it writes for projection.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass


class Listing(enum.Enum):
    """How one walk of one resource writes into the mirror."""

    DELTA = "delta"  # what changed since the stored delta link, compared row by row
    COMPLETE = "complete"  # every object, compared with the mirror: what it does not return is gone
    FIRST = "first"  # every object, for a tenant the mirror holds none of: written straight in, nothing to compare

    @classmethod
    def of(cls, *, link: str | None, held: bool) -> Listing:
        """The walk from `link` (None: no delta link stored, or a complete listing asked for) over a mirror that
        `held` some of this resource for the tenant already."""
        if link is not None:
            return cls.DELTA
        return cls.COMPLETE if held else cls.FIRST

    @property
    def complete(self) -> bool:
        """Every object is listed: absence is evidence, and memberships are replaced as a whole."""
        return self is not Listing.DELTA

    @property
    def first(self) -> bool:
        """Nothing to compare against: pages are written straight in (COPY), then the planner's statistics are
        refreshed (the table just grew from nothing)."""
        return self is Listing.FIRST


@dataclass(frozen=True)
class Pull:
    """One unit of work's pull of a tenant's directory into the mirror."""

    # Every object listed whatever delta link is stored (the hourly resync, a tenant's first sync); else the
    # changes since the stored link, or a complete listing where none is stored.
    complete: bool = False
    first_sync: bool = False  # the mirror held no user of the tenant before this pull
    # A first sync's users listing flags every user it writes (someone projects the flags); False when the
    # caller projects every user anyway.
    flag_new: bool = True

    @property
    def flags_changes(self) -> bool:
        """Whether groups and enrichment flag the users whose projection they change. A first sync's users are
        all flagged by the users listing already, or all projected by the caller."""
        return not self.first_sync

    def relisting(self) -> Pull:
        """This pull as a complete listing: what follows an expired delta link."""
        return dataclasses.replace(self, complete=True)


DELTA_PULL = Pull()  # after change notifications: the tenant's mirror exists, every change is flagged
