"""Model budgets on the mesh: each instance's account, held before a call and settled after, once.

Every instance has an account in the state bucket (``b.<instance>``): what it spent itself, what
its whole subtree spent (itself included), and what is *held* for calls in flight anywhere in its
subtree. A model call of instance X (with ancestors P, G, ... up to the root) is made in three steps:

1. **Hold.** Its estimate (``budget.call_estimate``: an upper bound) must fit, for X and for every
   ancestor, within the budget less the subtree's spending and holdings. If it does not, the call
   resolves ``quota-exceeded`` naming the instance whose budget it would break. If it does, one
   atomic batch adds the estimate to every account's holdings, each guarded by the revision it was
   read at (two siblings racing for a parent's last tokens: one re-reads and is refused), with a
   hold marker ``r.<handle>`` that must not exist: a redelivered call task never holds twice.
2. **Call** the provider.
3. **Settle.** One atomic batch releases the hold from every account, adds the actual usage to the
   subtree totals (and to X's own), and writes the call task's commit marker holding its outbox
   (the call record, the inbox entry, the poke). So the spending is booked exactly when the answer
   is stored, once; a host killed before it leaves the hold in place for the redelivery to settle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cbor2

from ..budget import BudgetLeft, BudgetNode, Spend
from ..errors import CommitConflict, RuntimeFailure
from ._commit import Committer, Outbox, StateMsg
from ._layout import budget_key, hold_key
from ._state import KV_PREFIX, StateReader

__all__ = ["Account", "BudgetBook", "BudgetRefused", "read_account"]

_ELSS = "Nats-Expected-Last-Subject-Sequence"
#: Re-reads after a guard failed (siblings spending at the same moment) before giving up for now.
_MAX_RERUNS = 16

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Account:
    """One instance's model account, with the revision it was read at (0: never written)."""

    own: Spend = Spend()
    tree: Spend = Spend()
    held: Spend = Spend()
    revision: int = 0

    @property
    def committed(self) -> Spend:
        """What counts against the budget now: spent by the subtree, and held for its calls."""
        return self.tree + self.held

    def encode(self) -> bytes:
        return cbor2.dumps({"own": self.own.to_doc(), "tree": self.tree.to_doc(), "held": self.held.to_doc()})

    @classmethod
    def decode(cls, data: bytes, revision: int) -> Account:
        doc = cbor2.loads(data)
        return cls(
            own=Spend.of_doc(doc["own"]),
            tree=Spend.of_doc(doc["tree"]),
            held=Spend.of_doc(doc["held"]),
            revision=revision,
        )


@dataclass(frozen=True, slots=True)
class BudgetRefused:
    """A call that does not fit: whose budget it would break, and how."""

    instance: str
    reason: str
    estimate: Spend
    budget: Spend
    committed: Spend

    def __str__(self) -> str:
        return (
            f"the model budget of instance {self.instance} does not cover this call ({self.reason}; "
            f"its tree has spent or holds {self.committed} of {self.budget})"
        )


class BudgetBook:
    """Reads and writes model accounts for one host; safe for concurrent calls."""

    def __init__(self, reader: StateReader, committer: Committer) -> None:
        self._reader = reader
        self._committer = committer

    async def accounts(self, chain: tuple[BudgetNode, ...]) -> list[Account]:
        return [await read_account(self._reader, node.instance) for node in chain]

    async def left(self, chain: tuple[BudgetNode, ...]) -> BudgetLeft:
        """What the first instance of ``chain`` may still spend, given every account above it."""
        accounts = await self.accounts(chain)
        return BudgetLeft.of([(node, a.committed) for node, a in zip(chain, accounts, strict=True)])

    async def hold(
        self, handle: str, chain: tuple[BudgetNode, ...], estimate: Spend
    ) -> Spend | BudgetRefused:
        """Hold ``estimate`` for call ``handle`` against every account of ``chain``: what is held
        (an earlier delivery's hold, if there was one), or why the call does not fit."""
        for _ in range(_MAX_RERUNS):
            earlier = await self.held_for(handle)
            if earlier is not None:
                return earlier
            accounts = await self.accounts(chain)
            for node, account in zip(chain, accounts, strict=True):
                over = (account.committed + estimate).over(node.budget)
                if over is not None:
                    return BudgetRefused(node.instance, over, estimate, node.budget, account.committed)
            writes = [
                _write(node.instance, Account(a.own, a.tree, a.held + estimate, a.revision))
                for node, a in zip(chain, accounts, strict=True)
            ]
            try:
                await self._committer.write_guarded(
                    writes, hold_key(handle), cbor2.dumps(estimate.to_doc()), what=f"hold of {handle}"
                )
            except CommitConflict:
                continue  # a sibling (or this call's redelivery) spent meanwhile: read again
            return (await self.held_for(handle)) or estimate
        raise RuntimeFailure(f"the model budget of {chain[0].instance} kept changing; will retry the call")

    async def held_for(self, handle: str) -> Spend | None:
        found = await self._reader.raw(hold_key(handle))
        if found is None or found[2]:
            return None
        return Spend.of_doc(cbor2.loads(found[0]))

    async def settle(
        self,
        task_id: str,
        chain: tuple[BudgetNode, ...],
        held: Spend,
        actual: Spend,
        outbox: Outbox,
    ) -> bool:
        """Release ``held``, book ``actual`` to every account of ``chain`` and commit ``task_id``
        with ``outbox``, in one atomic batch. False if it had been committed (nothing booked)."""
        if actual.input_tokens > held.input_tokens or actual.output_tokens > held.output_tokens:
            _log.warning(
                "model call of %s used more than was held (%s > %s): the estimate is not a bound "
                "for this provider",
                chain[0].instance,
                actual,
                held,
            )
        for _ in range(_MAX_RERUNS):
            accounts = await self.accounts(chain)
            writes = [
                _write(
                    node.instance,
                    Account(
                        own=a.own + actual if i == 0 else a.own,
                        tree=a.tree + actual,
                        held=(a.held - held).floored(),
                        revision=a.revision,
                    ),
                )
                for i, (node, a) in enumerate(zip(chain, accounts, strict=True))
            ]
            try:
                return await self._committer.commit_outbox(task_id, outbox, state=writes)
            except CommitConflict:
                continue
        raise RuntimeFailure(f"the model budget of {chain[0].instance} kept changing; will settle again")


async def read_account(reader: StateReader, instance: str) -> Account:
    """``instance``'s model account (empty, revision 0, when it never spent)."""
    found = await reader.raw(budget_key(instance))
    if found is None:
        return Account()
    value, revision, deleted = found
    if deleted or not value:
        return Account(revision=revision)
    try:
        return Account.decode(value, revision)
    except (ValueError, KeyError, TypeError, cbor2.CBORDecodeError) as exc:
        # Only hosts write accounts: a broken one is a bug, and must not be read as "nothing spent".
        raise RuntimeFailure(f"the model account of {instance} does not decode: {exc}") from exc


def _write(instance: str, account: Account) -> StateMsg:
    return (KV_PREFIX + budget_key(instance), account.encode(), {_ELSS: str(account.revision)})
