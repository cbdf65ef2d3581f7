"""Consumer groups: membership, generations, assignment, expiry, fencing, committed offsets.

``GroupCoordinator`` holds the groups of one log and is the one door to
committed offsets (``commit_offsets``, fenced). Members of a ``Group`` come
in kinds (``membership.py``); the assignors are pure functions
(``assignors.py``); the administration of groups is ``admin.py``.
"""

from .coordinator import GroupCoordinator
from .membership import EmbeddedMember, Group, GroupDescription, Member, MemberDescription

__all__ = ["EmbeddedMember", "Group", "GroupCoordinator", "GroupDescription", "Member", "MemberDescription"]
