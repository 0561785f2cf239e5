"""The store's logic in portable SQL, once for both dialects, in parts named for what they do.

``tx`` is what every part stands on: the dialect's hooks (a write transaction, a reader,
wake-ups) and one commit's deferred writes, events and wake-ups. ``rows`` declares a task's
columns once. ``tasks`` reads tasks; ``leases`` takes tasks back from agents that are gone and
settles dependents; ``agents`` registers and heartbeats; ``queue`` adds tasks and hands them
to idle agents; ``claims`` claims them and records results; ``mailbox`` holds messages,
shared context and the event log; ``history`` counts finished tasks and prunes old ones;
``memory`` keeps remembered items and searches their keywords.
``SqlStore`` only combines them; ``sqlite`` and ``postgres`` are the dialects.
"""

from podium.store.sql.agents import Agents
from podium.store.sql.claims import Claims
from podium.store.sql.history import History
from podium.store.sql.mailbox import Mailbox
from podium.store.sql.memory import Memories
from podium.store.sql.tx import SqlBase, Tx

__all__ = ["SqlStore", "SqlBase", "Tx"]


class SqlStore(History, Memories, Agents, Claims, Mailbox):
    """Store logic shared by the SQL dialects."""
