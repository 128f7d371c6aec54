"""Tasks in a tree: every long-running operation of an actor lives at ``tasks/<id>``.

A task's entry (kind, state, progress, owner, timestamps, detail, result or error, and the
``spec`` it was started from) is part of the actor's tree, so it is persisted, published,
resynchronised and monitored like any other value, and it survives a restart: on start the
actor finds its unfinished tasks in its tree and resumes them (or fails them, saying why).

``TaskBook`` is the only writer of ``tasks/...``. State changes follow one graph::

    pending -> running | cancelled
    running -> paused | succeeded | failed | cancelled
    paused  -> running | failed | cancelled

A request for any other change is ``INVALID_STATE`` with the task's state in the details.
When the collection is full, the oldest finished tasks make room.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from object_model import ModelError, ObjectTree, Write
from object_model.errors import InvalidStateError, LimitExceededError, UnknownPathError
from object_model.monitoring import TaskAction, TaskState
from object_model.tree import Delete, Operation

ROOT = "tasks"

_NEXT: dict[TaskState, frozenset[TaskState]] = {
    TaskState.PENDING: frozenset({TaskState.RUNNING, TaskState.CANCELLED}),
    TaskState.RUNNING: frozenset({TaskState.PAUSED, TaskState.SUCCEEDED, TaskState.FAILED,
                                  TaskState.CANCELLED}),
    TaskState.PAUSED: frozenset({TaskState.RUNNING, TaskState.FAILED, TaskState.CANCELLED}),
}
_ACTION_TARGET = {TaskAction.START: TaskState.RUNNING, TaskAction.RESUME: TaskState.RUNNING,
                  TaskAction.PAUSE: TaskState.PAUSED, TaskAction.CANCEL: TaskState.CANCELLED}


class TaskBook:
    """The tasks of one tree; ``now_us`` gives the time stamped on changes."""

    def __init__(self, tree: ObjectTree, now_us: Callable[[], int], *,
                 capacity: int = 256) -> None:
        self.tree = tree
        self.now_us = now_us
        self.capacity = capacity

    def __contains__(self, task_id: str) -> bool:
        return f"{ROOT}/{task_id}/kind" in self.tree

    def get(self, task_id: str) -> dict[str, Any]:
        """The task's entry; ``UNKNOWN_PATH`` (naming the tasks there are) if none."""
        if task_id not in self:
            known = sorted(self.ids())
            raise UnknownPathError(
                f"no task {task_id!r} here" + (f" (tasks: {', '.join(known[:20])})" if known
                                               else " (there are no tasks)"),
                path=f"{ROOT}/{task_id}", details={"task": task_id})
        entry: dict[str, Any] = self.tree.read(f"{ROOT}/{task_id}")
        return entry

    def state(self, task_id: str) -> TaskState:
        return TaskState(self.tree.get(f"{ROOT}/{task_id}/state"))

    def ids(self, kind: str | None = None) -> list[str]:
        try:
            entries = self.tree.read(ROOT)
        except ModelError:
            return []
        return [tid for tid, entry in entries.items() if kind is None or entry.get("kind") == kind]

    def unfinished(self, kind: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        for task_id in self.ids(kind):
            entry = self.get(task_id)
            if not TaskState(entry["state"]).finished:
                yield task_id, entry

    def create(self, task_id: str, kind: str, *, owner: str, spec: str,
               state: TaskState = TaskState.RUNNING, detail: str = "") -> None:
        """Enter a new task (replacing a finished one of that id, or a running one of the same
        kind: setting up monitoring task ``power`` again replaces it). ``INVALID_STATE`` if a
        task of another kind is still going under that id; ``LIMIT_EXCEEDED`` when the
        collection is full of unfinished tasks."""
        ops: list[Operation] = []
        if task_id in self:
            entry = self.get(task_id)
            if entry["kind"] != kind and not TaskState(entry["state"]).finished:
                raise InvalidStateError(
                    f"task {task_id!r} is a {entry['state']} {entry['kind']} task: cancel it or "
                    "choose another id", details={"task": task_id, "state": entry["state"]})
            ops.append(Delete(f"{ROOT}/{task_id}"))
        elif len(self.ids()) >= self.capacity:
            ops += self._make_room(task_id)
        now = self.now_us()
        ops.append(Write(f"{ROOT}/{task_id}", {
            "kind": kind, "state": state.value, "progress_percent": 0.0, "owner": owner,
            "created_at": now, "updated_at": now, "detail": detail, "result": "",
            "error_code": "", "error": "", "spec": spec,
            **({"started_at": now} if state is TaskState.RUNNING else {})}))
        self.tree.apply(ops)

    def _make_room(self, task_id: str) -> list[Operation]:
        finished = sorted((entry.get("updated_at", 0), tid) for tid, entry in
                          self.tree.read(ROOT).items()
                          if TaskState(entry["state"]).finished)
        if not finished:
            raise LimitExceededError(
                f"{self.capacity} tasks are still going here: cancel one before starting "
                f"{task_id!r}", details={"limit": self.capacity})
        return [Delete(f"{ROOT}/{finished[0][1]}")]

    def update(self, task_id: str, *, state: TaskState | None = None,
               progress: float | None = None, detail: str | None = None,
               result: str | None = None, error: ModelError | None = None) -> None:
        """Change a task (one transaction); a state change must follow the graph."""
        prefix = f"{ROOT}/{task_id}"
        now = self.now_us()
        writes = [Write(f"{prefix}/updated_at", now)]
        if state is not None:
            current = self.state(task_id)
            if state is not current:
                self._check_transition(task_id, current, state)
                writes.append(Write(f"{prefix}/state", state.value))
                if state is TaskState.RUNNING and f"{prefix}/started_at" not in self.tree:
                    writes.append(Write(f"{prefix}/started_at", now))
                if state.finished:
                    writes.append(Write(f"{prefix}/finished_at", now))
                    if state is TaskState.SUCCEEDED:
                        writes.append(Write(f"{prefix}/progress_percent", 100.0))
        if progress is not None:
            writes.append(Write(f"{prefix}/progress_percent", round(min(100.0, progress), 2)))
        if detail is not None:
            writes.append(Write(f"{prefix}/detail", detail[:200]))
        if result is not None:
            writes.append(Write(f"{prefix}/result", result[:200]))
        if error is not None:
            writes += [Write(f"{prefix}/error_code", error.code.value),
                       Write(f"{prefix}/error", error.text[:500])]
        self.tree.apply(writes)

    def target_of(self, task_id: str, action: TaskAction) -> TaskState:
        """The state ``action`` asks for, checked against the task's current state."""
        current = self.state(task_id)
        target = _ACTION_TARGET[action]
        if action is TaskAction.RESUME and current is not TaskState.PAUSED:
            self._refuse(task_id, current, "resumed (it is not paused)")
        if action is TaskAction.START and current is not TaskState.PENDING:
            self._refuse(task_id, current, "started (it is not pending)")
        self._check_transition(task_id, current, target)
        return target

    def _check_transition(self, task_id: str, current: TaskState, target: TaskState) -> None:
        if target not in _NEXT.get(current, frozenset()):
            self._refuse(task_id, current, f"made {target.value}")

    @staticmethod
    def _refuse(task_id: str, current: TaskState, what: str) -> None:
        raise InvalidStateError(
            f"task {task_id!r} is {current.value}: it cannot be {what}",
            details={"task": task_id, "state": current.value})


__all__ = ["ROOT", "TaskBook"]
