"""User-facing errors: each says what is wrong and how to fix it.

They carry only a message so that they pickle cleanly: Ray re-raises a worker's exception on the
driver, and the user should see this message there, not a bare traceback.
"""


class KoelectraError(Exception):
    """Base class for errors caused by the user's input (config, data, storage, checkpoints)."""

    kind = "error"

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


class CheckpointError(KoelectraError):
    """A checkpoint is missing, incomplete or does not match the run."""

    kind = "checkpoint error"
