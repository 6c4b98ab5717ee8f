# Copyright (c) mmclim contributors. All rights reserved.
"""What a process skipped while loading data: counted by reason, logged, summarised at exit."""
import logging
import os
from multiprocessing.util import Finalize
from typing import Dict, List, Optional

from mmengine.logging import print_log

# How many offending image ids (or files, or samples) a report names.
NUM_REPORTED_IDS = 5
# Skips are logged at the first skip, then at every this many-th skip of the process, with the
# counts so far.
BAD_IMAGE_LOG_INTERVAL = 100


class SkipCounter:
    """The skips of one process, by reason, with the first items skipped.

    Each skip is counted under its reason; the first and every :data:`BAD_IMAGE_LOG_INTERVAL`-th
    is logged (a warning) with the counts so far, and :meth:`summarize` logs them, as it does
    when the process ends (or the counter is collected). The counts belong to the process that
    skips: a dataloader worker holds a forked copy, which starts counts of its own at its first
    skip (its pid in the lines), and the main process's stay empty.

    Args:
        unit (str): What the lines say was skipped, e.g. ``'images skipped at load time'``.
        items (str): What the first items are, e.g. ``'files'``.
    """

    def __init__(self, unit: str, items: str) -> None:
        self.unit = unit
        self.items = items
        self.counts: Dict[str, int] = {}
        self.first: List[str] = []
        self._pid: Optional[int] = None

    def describe(self, pid: Optional[int] = None) -> str:
        """The counts as the log lines state them."""
        return _describe(self.unit, self.items, self.counts, self.first, pid or os.getpid())

    def count(self, name: str, reason: str, item: str, message: str) -> None:
        """Count a skip, and log it if it is the first or an interval's.

        Args:
            name (str): Who skips (the dataset and its file), for the summary at exit.
            reason (str): Why, the key it is counted under.
            item (str): What was skipped (a file, a sample), kept among the first ones.
            message (str): The log line's start.
        """
        pid = os.getpid()
        if self._pid != pid:
            self._pid = pid
            self.counts, self.first = {}, []
            # The callback holds the counts, not the counter, which it would keep alive.
            Finalize(self, _log_summary,
                     args=(name, self.unit, self.items, self.counts, self.first, pid),
                     exitpriority=0)
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.first) < NUM_REPORTED_IDS and item not in self.first:
            self.first.append(item)
        total = sum(self.counts.values())
        if total == 1 or total % BAD_IMAGE_LOG_INTERVAL == 0:
            print_log(f'{message}; {self.describe(pid)}', logger='current',
                      level=logging.WARNING)

    def summarize(self, name: str) -> Dict[str, int]:
        """Log this process's skips (nothing when none), and return a copy of the counts.

        Args:
            name (str): Who skipped, first in the line.

        Returns:
            dict: Reason -> number of skips.
        """
        _log_summary(name, self.unit, self.items, self.counts, self.first, os.getpid())
        return dict(self.counts)


def _describe(unit: str, items: str, counts: Dict[str, int], first: List[str], pid: int) -> str:
    return f'{sum(counts.values())} {unit} by process {pid}: {counts} (first {items}: {first})'


def _log_summary(name: str, unit: str, items: str, counts: Dict[str, int], first: List[str],
                 pid: int) -> None:
    if counts:
        print_log(f'{name}: {_describe(unit, items, counts, first, pid)}', logger='current',
                  level=logging.WARNING)
