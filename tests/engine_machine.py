"""What the model-based tests that drive an Engine beside a dict share: a store in a folder of
its own with tiny segments, a read-only follower it may start, the engine's own checks after
every step, paging through every key, and how such a machine runs (its full run and the few
examples the fast loop runs)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, run_state_machine_as_test
from store_model import Model

from logkv import Engine

#: Tiny segments: the log rotates every few records.
SEGMENT_SIZE = 4096
#: The fast loop's run of a machine; CI also runs the full one.
QUICK_EXAMPLES = 15


class EngineMachine(RuleBasedStateMachine):
    """An engine at ``path`` (in a temporary ``folder``), the model it must agree with, and
    perhaps a read-only ``follower``; all of it closed and removed at teardown."""

    #: The start of the temporary folder's name.
    folder_prefix = "logkv-model-"

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix=self.folder_prefix))
        self.path = self.folder / "store"
        self.engine = Engine.open(self.path, segment_size=SEGMENT_SIZE)
        self.follower: Engine | None = None
        self.model: Model = {}

    def teardown(self) -> None:
        self.engine.close()
        if self.follower is not None:
            self.follower.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def check_pages_through(self, size: int) -> None:
        """Pages of ``size`` keys, each starting after the last key of the one before, list
        every key of the model in order."""
        collected: list[str] = []
        start: str | None = None
        while True:
            batch = list(self.engine.keys(exclusive_start_key=start, limit=size))
            collected.extend(batch)
            if len(batch) < size:
                break
            start = batch[-1]
        assert collected == sorted(self.model)

    @invariant()
    def engine_invariants(self) -> None:
        self.engine._check()
        if self.follower is not None:
            self.follower._check()


def machine_settings(max_examples: int, stateful_step_count: int) -> settings:
    """The full run of a machine: no deadline (a compaction or reopen takes what it takes), no
    example database, and no complaint that generating steps is slow."""
    return settings(
        max_examples=max_examples,
        stateful_step_count=stateful_step_count,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def run_a_few_examples(machine: type[RuleBasedStateMachine]) -> None:
    """The machine at its own settings but a few examples, so that the fast loop runs every
    rule too."""
    run_state_machine_as_test(
        machine, settings=settings(machine.TestCase.settings, max_examples=QUICK_EXAMPLES)
    )
