"""Typha tests: on a hang, print every task's stack (set PYCALICO_TASK_DUMP=seconds)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def dump_tasks_on_hang() -> AsyncIterator[None]:
    after = float(os.environ.get("PYCALICO_TASK_DUMP", "0"))
    if not after:
        yield
        return

    async def dump() -> None:
        await asyncio.sleep(after)
        for t in asyncio.all_tasks():
            print(f"--- {t.get_name()}", file=sys.stderr)
            t.print_stack(file=sys.stderr)

    task = asyncio.create_task(dump())
    yield
    task.cancel()
