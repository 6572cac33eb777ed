"""The engine's own exceptions: every bad input ends in one of these, with a message that names the problem."""


class XMCError(Exception):
    """Base class of every error the engine raises on purpose."""


class DatasetFormatError(XMCError, ValueError):
    """A dataset file is malformed. The message names the file, the line and the problem.

    >>> raise DatasetFormatError("train.txt", 17, "label id 212 >= num_labels 159")
    Traceback (most recent call last):
    engine.errors.DatasetFormatError: train.txt line 17: label id 212 >= num_labels 159
    """

    def __init__(self, path, line, problem):
        self.path, self.line, self.problem = str(path), line, problem
        where = self.path if line is None else f"{self.path} line {line}"
        super().__init__(f"{where}: {problem}")


class ConfigError(XMCError, ValueError):
    """A setting is out of range or inconsistent; raised before anything is allocated."""


class DeviceError(ConfigError):
    """A run asks for a device this machine does not have: the message says what is missing."""


class DivergenceError(XMCError):
    """The loss became NaN or inf: training stopped; the last good checkpoint is kept."""


class RunNotFoundError(XMCError):
    """A run directory, its config or its checkpoint is missing."""


class RunWriteError(XMCError):
    """A file of the run store could not be written (disk full, a read-only directory): what was
    stored before is kept whole; the message names the file and the cause."""


class CheckpointError(XMCError):
    """A checkpoint is missing, not a safetensors file, or does not fit the model / config."""


class FetchError(XMCError):
    """A dataset cannot be fetched: unknown name, network failure, wrong checksum, hostile archive."""


class BundleError(XMCError):
    """An exported run bundle that cannot be used (a bad manifest, a file missing, changed or a
    symlink), or a folder an export may not write to; the message names the file."""
