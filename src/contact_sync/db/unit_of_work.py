"""The unit of work: one connection and one transaction, opened by an entry point.

Only entry points (API routes, CLI commands, Celery tasks, the consumer's
parking) open one; services take its connection and never begin, commit or
roll back, so what one use case writes (an inbox row and its contact update,
say) commits together or not at all. Nothing commits behind the caller's
back: leaving the block without ``commit()`` rolls back, whether an error
was raised or the entry point only read.
"""

from __future__ import annotations

from types import TracebackType

from sqlalchemy import Connection, Engine, RootTransaction


class UnitOfWork:
    """A context manager around one connection and its transaction."""

    conn: Connection

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._transaction: RootTransaction | None = None

    def __enter__(self) -> UnitOfWork:
        self.conn = self._engine.connect()
        try:
            self._transaction = self.conn.begin()
        except BaseException:
            self.conn.close()
            raise
        return self

    def commit(self) -> None:
        """Make this unit's writes durable; the block may only end afterwards."""
        if self._transaction is None:
            raise RuntimeError("commit() outside the unit of work's block")
        self._transaction.commit()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._transaction is not None and self._transaction.is_active:
                self._transaction.rollback()
        finally:
            self._transaction = None
            self.conn.close()


def unit_of_work(engine: Engine) -> UnitOfWork:
    """A unit of work on ``engine``: ``with unit_of_work(engine) as uow: ...; uow.commit()``."""
    return UnitOfWork(engine)
