"""``TextExecutor``: an a2a-sdk ``AgentExecutor`` around a plain function of text.

Most fabric agents answer text with text, or stream text. The function gets the user's text
and returns a ``str`` (one artifact), or is an async generator of ``str`` (one artifact whose
chunks are appended in order, so an A2A stream shows the tokens as they come). The task goes
submitted → working → completed; an exception fails it; a cancel stops the generator (it sees
``CancelledError``/``GeneratorExit``) and the task ends canceled.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from a2a.helpers import new_task_from_user_message, new_text_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater

__all__ = ["TextExecutor", "TextFn"]

TextFn = Callable[[str], Awaitable[str] | AsyncIterator[str]]


class TextExecutor(AgentExecutor):
    """Runs ``fn(text)`` as an A2A task (see the module doc)."""

    def __init__(self, fn: TextFn, *, artifact_name: str = "answer") -> None:
        self._fn = fn
        self._artifact_name = artifact_name

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if task is None:
            assert context.message is not None  # a send always carries one
            task = new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        result: Any = self._fn(context.get_user_input())
        artifact_id = f"{task.id}-{self._artifact_name}"
        if inspect.isasyncgen(result):
            first = True
            async for chunk in result:
                await updater.add_artifact(
                    [new_text_part(str(chunk))],
                    artifact_id=artifact_id,
                    name=self._artifact_name,
                    append=not first,
                )
                first = False
            await updater.add_artifact(
                [new_text_part("")], artifact_id=artifact_id, append=True, last_chunk=True
            )
        else:
            text = await result
            await updater.add_artifact(
                [new_text_part(str(text))], artifact_id=artifact_id, name=self._artifact_name
            )
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if task is None:
            return
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.cancel(new_text_message("cancelled", task_id=task.id))
