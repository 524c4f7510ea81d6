"""A conversation's messages as a tree: each message follows its parent; edits and
regenerations are siblings. Pure functions over the (id, parent) links of one conversation,
read in order (oldest first), so a branch's newest message is found without more SQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from uuid import UUID

from app.errors import MessageNotFound


@dataclass(frozen=True, slots=True)
class Tree:
    """Every message of a conversation as `id -> parent`, in the order they were written."""

    parents: dict[UUID, UUID | None]

    @classmethod
    def of(cls, links: Iterable[tuple[UUID, UUID | None]]) -> Tree:
        """From (id, parent id) pairs, oldest first."""
        return cls(dict(links))

    @property
    def newest(self) -> UUID | None:
        """The newest message: where a conversation with no active leaf continues."""
        return next(reversed(self.parents), None)

    def children(self, parent: UUID | None) -> list[UUID]:
        """The messages that follow `parent` (None: the first messages), oldest first."""
        return [node for node, above in self.parents.items() if above == parent]

    def path_to(self, leaf: UUID | None) -> list[UUID]:
        """The messages from the first down to `leaf`, in order (empty for None)."""
        path: list[UUID] = []
        node = leaf
        while node is not None:
            if node not in self.parents or len(path) > len(self.parents):
                raise MessageNotFound(node)
            path.append(node)
            node = self.parents[node]
        path.reverse()
        return path

    def newest_leaf_under(self, node: UUID) -> UUID:
        """The newest message of `node`'s branch: `node` itself when nothing follows it."""
        if node not in self.parents:
            raise MessageNotFound(node)
        below = {node}
        newest = node
        for candidate, parent in self.parents.items():  # oldest first: parents come first
            if parent in below:
                below.add(candidate)
                newest = candidate
        return newest

    def siblings(self, path: Sequence[UUID]) -> dict[UUID, list[UUID]]:
        """For each message of `path`, it and its siblings (its parent's children), oldest
        first: what a UI shows as "2 / 3"."""
        by_parent: dict[UUID | None, list[UUID]] = {}
        for node, parent in self.parents.items():
            by_parent.setdefault(parent, []).append(node)
        return {node: by_parent[self.parents[node]] for node in path}
