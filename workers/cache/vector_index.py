"""One scope's vectors in a worker's memory, searched by cosine similarity with numpy.

Vectors are normalized on the way in, so a similarity is one matrix-vector product (BLAS). The
matrix grows by a quarter at a time, so the index holds at most 1.25x the raw bytes of its
vectors (plus ids and timestamps).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

GROWTH = 1.25
MIN_ROWS = 256


class VectorIndex:
    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self._matrix: NDArray[np.float32] = np.empty((0, dimensions), dtype=np.float32)
        self._stamps: NDArray[np.float64] = np.empty(0, dtype=np.float64)
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def nbytes(self) -> int:
        return int(self._matrix.nbytes + self._stamps.nbytes)

    def add(self, entry_id: str, vector: NDArray[np.float32], stamp: float) -> None:
        if vector.shape != (self.dimensions,):
            raise ValueError(f"vector has shape {vector.shape}, index has {self.dimensions}")
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            return
        row = self._rows.get(entry_id)
        if row is None:
            row = len(self._ids)
            self._reserve(row + 1)
            self._ids.append(entry_id)
            self._rows[entry_id] = row
        self._matrix[row] = vector / norm
        self._stamps[row] = stamp

    def remove(self, entry_id: str) -> None:
        """Swap the last row into the removed one's place."""
        row = self._rows.pop(entry_id, None)
        if row is None:
            return
        last = len(self._ids) - 1
        if row != last:
            moved = self._ids[last]
            self._matrix[row] = self._matrix[last]
            self._stamps[row] = self._stamps[last]
            self._ids[row] = moved
            self._rows[moved] = row
        self._ids.pop()

    def search(
        self, query: NDArray[np.float32], threshold: float, not_before: float = 0.0
    ) -> tuple[str, float] | None:
        """The most similar entry at or above ``threshold`` stamped at or after ``not_before``."""
        count = len(self._ids)
        norm = float(np.linalg.norm(query))
        if count == 0 or norm == 0.0:
            return None
        scores = self._matrix[:count] @ (query.astype(np.float32) / norm)
        if not_before:
            scores[self._stamps[:count] < not_before] = -2.0
        best = int(np.argmax(scores))
        score = float(scores[best])
        return (self._ids[best], score) if score >= threshold else None

    def _reserve(self, rows: int) -> None:
        if rows <= self._matrix.shape[0]:
            return
        size = max(MIN_ROWS, int(self._matrix.shape[0] * GROWTH) + 1, rows)
        matrix = np.empty((size, self.dimensions), dtype=np.float32)
        matrix[: len(self._ids)] = self._matrix[: len(self._ids)]
        stamps = np.empty(size, dtype=np.float64)
        stamps[: len(self._ids)] = self._stamps[: len(self._ids)]
        self._matrix, self._stamps = matrix, stamps
