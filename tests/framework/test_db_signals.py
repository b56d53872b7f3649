"""A SIGTERM/SIGINT that reaches the engine inside a database transaction is raised when the
transaction has ended: the write commits whole, SQLAlchemy never sees the interruption."""

from __future__ import annotations

import os
import signal

import pytest
from sqlalchemy import select, update

from emforge import db
from emforge.engine.execute import RunAborted, _install_abort_handlers, _restore_handlers


def test_interrupt_inside_a_write_is_raised_after_its_commit(project):
    old = _install_abort_handlers()
    try:
        with pytest.raises(RunAborted):
            with db.write(project.engine) as conn:
                conn.execute(update(db.meta).values(value="x").where(db.meta.c.key == "probe"))
                conn.execute(db.meta.insert().values(key="probe", value="committed"))
                os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, in the body
                conn.execute(update(db.meta).where(db.meta.c.key == "probe").values(value="whole"))
    finally:
        _restore_handlers(old)
    with db.read(project.engine) as conn:
        value = conn.execute(select(db.meta.c.value).where(db.meta.c.key == "probe")).scalar()
    assert value == "whole"  # the whole transaction committed, then the abort was raised


def test_interrupt_outside_a_transaction_is_raised_at_once(project):
    old = _install_abort_handlers()
    try:
        with pytest.raises(RunAborted):
            os.kill(os.getpid(), signal.SIGINT)
            raise AssertionError("not reached")  # pragma: no cover
    finally:
        _restore_handlers(old)
