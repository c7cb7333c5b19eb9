"""The reservation state machine: the only place that changes ``vcregist.state``.

Stable states are where a reservation rests between runs; transitional states are held only
while a process works on the cluster, so finding one at the start of a run means a run crashed
there (the tick resumes it). Every change is one row update plus one ``vcevent`` row, in the
caller's transaction.
"""

import logging

from vc.db import naive_utc
from vc.errors import InvalidTransition, NotFound

LOG = logging.getLogger(__name__)

RESERVED, STARTING, RUNNING, STOPPING, STOPPED, FAILED, DELETING = (
    "reserved", "starting", "running", "stopping", "stopped", "failed", "deleting")
# not stored: the row is gone; recorded as the last event of a reservation
DELETED = "deleted"

STABLE = (RESERVED, RUNNING, STOPPED, FAILED)
TRANSITIONAL = (STARTING, STOPPING, DELETING)
ALL = STABLE + TRANSITIONAL

# States whose reservation still holds its capacity for its window.
HOLDS_CAPACITY = (RESERVED, STARTING, RUNNING, STOPPING, FAILED)

NEXT = {
    # not started yet: start it, or it ended/was cancelled before it ever ran, or delete it
    RESERVED: (STARTING, STOPPED, DELETING),
    # a start ends running or failed; a crashed start may be undone by a stop
    STARTING: (RUNNING, FAILED, STOPPING),
    RUNNING: (STOPPING,),
    STOPPING: (STOPPED, FAILED),
    # reopened by extending its end (its volumes still hold their data)
    STOPPED: (RESERVED, DELETING),
    # a failed start or stop is retried, cleaned up, or (when nothing is held) deleted
    FAILED: (STARTING, STOPPING, DELETING),
    DELETING: (DELETED, FAILED),
}


def can(from_state: str, to_state: str) -> bool:
    return to_state in NEXT.get(from_state, ())


def lock(cur, rack: int) -> dict:
    """``SELECT ... FOR UPDATE`` the reservation row.

    :raises NotFound: when there is no such rack.
    """
    cur.execute("SELECT * FROM vcregist WHERE rack = %s FOR UPDATE", (rack,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(what="reservation", key=rack)
    return row


def event(cur, rack, now, actor, reason, from_state=None, to_state=None):
    """Write one audit row."""
    cur.execute(
        "INSERT INTO vcevent (rack, at, actor, from_state, to_state, reason) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (rack, naive_utc(now, micro=True), actor[:64], from_state, to_state, reason))


def transition(cur, row: dict, to_state: str, now, actor: str, reason: str, error=None,
               action=None) -> dict:
    """Move a locked reservation row to ``to_state`` and log the event.

    :param row: the row as returned by :func:`lock` (updated in place).
    :param error: stored on the reservation (cleared when None and the target is not failed).
    :raises InvalidTransition: when the table does not allow it.
    """
    frm = row["state"]
    if not can(frm, to_state):
        raise InvalidTransition(rack=row["rack"], state=frm, action=action or "go to " + to_state)
    if to_state in (FAILED, STOPPING):
        # a failure, or a stop before the booked end: a notice for the owner (vc.notify), sent
        # by the next tick; written here, in the same transaction, so it is never lost
        from vc import notify

        notify.on_transition(cur, row, to_state, now, actor, reason)
    if to_state == DELETED:
        cur.execute("DELETE FROM vcregist WHERE rack = %s", (row["rack"],))
    else:
        cur.execute("UPDATE vcregist SET state = %s, error = %s, updated_at = %s WHERE rack = %s",
                    (to_state, error, naive_utc(now), row["rack"]))
    event(cur, row["rack"], now, actor, reason, frm, to_state)
    LOG.info("reservation %s: %s -> %s (%s)", row["rack"], frm, to_state, reason)
    row["state"] = to_state
    row["error"] = error
    return row
