"""process.max: a cap on workers across every pool.

The master makes one small shared table before it forks any pool manager;
each manager writes only its own cell (its number of workers) and forks only
while the sum of all cells is below the cap. No counter is written from two
sides: the master only zeroes the cell of a manager it reaped.
"""

from __future__ import annotations

from .scoreboard import Cells


class ProcessTable(Cells):
    """One cell per pool manager (the master hands out the numbers)."""

    __slots__ = ()

    @property
    def cells(self) -> int:
        return self.count

    def total(self) -> int:
        """Workers of every pool manager together."""
        return sum(self.values())
