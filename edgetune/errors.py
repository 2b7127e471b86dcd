"""User-facing errors. The CLI prints them as `error: <message>` and exits 1.

Anything else that escapes is a bug and keeps its traceback.
"""


class EdgetuneError(Exception):
    """A mistake the user can fix; the message says what happened and what to do."""


class AudioError(EdgetuneError):
    """An audio file that cannot be used (unreadable, empty, non-finite, too long)."""


class DataError(EdgetuneError):
    """A dataset folder or manifest that cannot be used."""


class ModelError(EdgetuneError):
    """A checkpoint or ONNX file that cannot be used."""


class DeviceError(EdgetuneError):
    """Audio hardware or runtime missing or failing (microphone, PortAudio, onnxruntime)."""
