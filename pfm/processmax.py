"""process.max: a cap on workers across every pool.

The master makes one small shared table before it forks any pool manager;
each manager writes only its own cell (its number of workers) and forks only
while the sum of all cells is below the cap. No counter is written from two
sides: the master only zeroes the cell of a manager it reaped.
"""

from __future__ import annotations

import mmap
import struct

_CELL = struct.Struct("<Q")


class ProcessTable:
    def __init__(self, cells: int):
        self.cells = cells
        self._buf = mmap.mmap(-1, cells * _CELL.size, flags=mmap.MAP_SHARED)

    def set(self, cell: int, workers: int) -> None:
        _CELL.pack_into(self._buf, cell * _CELL.size, workers)

    def total(self) -> int:
        return sum(n for (n,) in _CELL.iter_unpack(self._buf))

    def close(self) -> None:
        self._buf.close()
