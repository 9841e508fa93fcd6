"""The ECR side: the client a cash register uses (asyncio core and a blocking facade), the checks
that an answer belongs to its request, the terminal lock and transaction numbers, recovery."""

from posbridge.ecr.answers import answer_problems
from posbridge.ecr.client import (
    DEFAULT_DEADLINE,
    RECOVERY_TABLE,
    BlockingEcrClient,
    EcrClient,
    Recovery,
)
from posbridge.ecr.ownership import TerminalBusy, TerminalLock, canonical_port

__all__ = [
    "DEFAULT_DEADLINE", "RECOVERY_TABLE", "BlockingEcrClient", "EcrClient", "Recovery", "TerminalBusy",
    "TerminalLock", "answer_problems", "canonical_port",
]
