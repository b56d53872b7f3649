"""One error hierarchy for everything a user can get wrong.

Every user mistake raises a subclass of :class:`EmforgeError` whose message names the
parameter or file and what is wrong with it, in one line. The CLI prints that line and exits
with status 2; anything that is not an ``EmforgeError`` is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "EmforgeError",
    "InputFileError",
    "ParamError",
    "ValidationError",
    "OutputFileError",
    "ProjectError",
    "NotFoundError",
    "PluginError",
]


class EmforgeError(Exception):
    """Base of all user-facing errors: the message is one line naming the culprit."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split("\n")))


class InputFileError(EmforgeError):
    """A file is missing, unreadable, truncated or not of the expected format.

    The message starts with the path.
    """

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # picklable: raised in a worker process, re-raised in the engine
        return (type(self), (self.path, self.problem))


class OutputFileError(EmforgeError):
    """A file cannot be written (a full disk, a missing folder); the message starts with the path."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # picklable: raised in a worker process, re-raised in the engine
        return (type(self), (self.path, self.problem))


class ParamError(EmforgeError):
    """A parameter (or input) value is invalid; the message starts with its name."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(f"{name}: {problem}")

    def __reduce__(self):  # picklable: raised in a worker process, re-raised in the engine
        return (type(self), (self.name, self.problem))


class ValidationError(EmforgeError):
    """Several problems found at once (a protocol's ``validate()``): one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))

    def __reduce__(self):  # picklable: raised in a worker process, re-raised in the engine
        return (type(self), (self.problems,))

    def lines(self) -> list[str]:
        return list(self.problems)


class ProjectError(EmforgeError):
    """The project folder or its database is not usable as asked."""


class NotFoundError(EmforgeError):
    """A run, object, protocol or plugin that was named does not exist."""


class PluginError(EmforgeError):
    """A plugin could not be discovered or loaded, or declares a duplicate id."""
