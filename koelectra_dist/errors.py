"""User-facing errors: each says what is wrong and how to fix it, and how they cross Ray.

They carry only a message so that they pickle cleanly: Ray re-raises a worker's exception on the
driver, and the user should see this message there, not a bare traceback.
"""

from collections.abc import Iterable


class KoelectraError(Exception):
    """Base class for errors caused by the user's input (config, data, storage, checkpoints)."""

    kind = "error"
    transient = False
    """True for a fault that is not the user's (the store did not answer): retried, not a user error."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __reduce__(self):
        return (type(self), (self.message,))

    def __str__(self) -> str:
        return self.message


class ConfigError(KoelectraError):
    """The configuration is malformed or inconsistent."""

    kind = "config error"


class DataError(KoelectraError):
    """Input data (corpus, shards, task files) is missing or malformed."""

    kind = "data error"


class StorageError(KoelectraError):
    """A local path or s3:// URI cannot be read or written."""

    kind = "storage error"


class StorageUnavailable(StorageError):
    """The store did not answer: unreachable, timed out, a server error (5xx) or throttling. Not the
    user's fault: pre-training waits for the store and resumes instead of stopping."""

    transient = True


class CheckpointError(KoelectraError):
    """A checkpoint is missing, incomplete or does not match the run."""

    kind = "checkpoint error"


def bullets(items: Iterable[object]) -> str:
    """`items` as the bulleted lines of an error message ("\n  - a\n  - b")."""
    return "".join(f"\n  - {item}" for item in items)


# ---------------------------------------------------------------- crossing Ray
# A KoelectraError raised in a Ray worker reaches the driver wrapped: Ray Core re-raises it as a
# RayTaskError subclass, Ray Train inside its worker-group errors. Whatever the wrapper,
# `user_error_in` finds the original, and the user sees its message alone.


def error_in(exc: BaseException) -> KoelectraError | None:
    """The KoelectraError inside `exc` (itself, a cause, a context or a worker failure), or None."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, KoelectraError):
            # Ray's RayTaskError subclasses keep the original's class but not its __str__.
            own = next(c for c in type(e).__mro__ if c.__module__ == __name__)
            return own(e.message)
        todo += [x for x in (e.__cause__, e.__context__) if x is not None]
        todo += list(getattr(e, "worker_failures", {}).values())
        todo += [x for x in getattr(e, "args", ()) if isinstance(x, BaseException)]
    return None


def user_error_in(exc: BaseException) -> KoelectraError | None:
    """The user's error inside `exc` (what `error_in` finds, unless it is transient), or None."""
    found = error_in(exc)
    return None if found is None or found.transient else found
