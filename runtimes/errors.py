"""The one exception tree of edgepack.

Every error a user can cause derives from :class:`EdgepackError`, and its message says what to do.
Third-party errors are re-raised at the boundary with ``raise ... from``.
"""

from __future__ import annotations


class EdgepackError(Exception):
    """Root of every edgepack error."""


class BundleError(EdgepackError):
    """A bundle cannot be read or trusted."""


class BundleCorruptError(BundleError):
    """The bundle is not a valid zip, is truncated, or a checksum does not match."""


class UnsafeBundleError(BundleError):
    """The bundle holds a dangerous entry (absolute path, ``..``, oversized file)."""


class BundleSchemaError(BundleError):
    """The manifest is missing, malformed, or of an unknown schema version."""


class BackendError(EdgepackError):
    """A runtime backend problem."""


class BackendNotFoundError(BackendError):
    """No backend of that name is registered."""


class BackendUnavailableError(BackendError):
    """The backend is registered but its library is not installed here."""


class ModelLoadError(BackendError):
    """The model bytes could not be loaded by the interpreter (unsupported op, bad file)."""


class NoUsableDelegateError(BackendError):
    """Every delegate in the ladder failed to load or to match the golden outputs."""


class DelegateRequiredError(NoUsableDelegateError):
    """The model's custom ops exist only in delegates that are not in the ladder or not available here."""


class InputSpecError(EdgepackError):
    """Inputs given to ``Session.run`` do not match the model's input spec."""


class ImageReadError(EdgepackError):
    """An image file or folder is missing, or a file is corrupt or not an image (``runtimes/images.py``)."""


class SourceError(EdgepackError):
    """A camera, video file, stream URL or image folder cannot be opened or read (``runtimes/pipeline``)."""


#: The pip extra that brings each optional top-level module (the one place this mapping lives).
EXTRA_FOR_MODULE: dict[str, str] = {
    "tensorflow": "convert", "keras": "convert", "onnx": "convert", "tf2onnx": "convert", "sympy": "convert",
    "onnxruntime": "onnxruntime", "ai_edge_litert": "litert", "tflite_runtime": "tflite-runtime",
    "PIL": "litert", "cv2": "camera", "torch": "torch", "onnxscript": "torch",
    "pytest": "dev", "matplotlib": "dev", "skimage": "dev", "importlinter": "dev", "hypothesis": "dev",
    "cryptography": "litert",
}


class MissingDependencyError(EdgepackError):
    """An optional library this command needs is not installed; the message names the pip extra."""

    def __init__(self, message: str, *, module: str | None = None) -> None:
        super().__init__(message)
        self.module = module

    @classmethod
    def for_module(cls, module: str, *, purpose: str) -> MissingDependencyError:
        """The error for a missing ``module`` (dotted names allowed), naming its extra from EXTRA_FOR_MODULE."""
        root = module.split(".")[0]
        extra = EXTRA_FOR_MODULE.get(root)
        how = f"pip install 'edgepack[{extra}]'" if extra else f"pip install {root}"
        return cls(f"{purpose} needs the Python module {root!r}, which is not installed here; "
                   f"install it with `{how}`.", module=root)


class OpenCVMissingError(MissingDependencyError):
    """No image decoder is installed: neither Pillow (device extras) nor OpenCV (``cv2``)."""


class ConfigError(EdgepackError):
    """A recipe, target or option is invalid (unknown key, wrong type, unknown name)."""


class StoreError(EdgepackError):
    """A bundle store (``runtimes/store.py``) problem."""


class StoreNotWritableError(StoreError):
    """The store directory cannot be created or written."""


class StoreBusyError(StoreError):
    """Another process holds the store lock for longer than the timeout."""


class StoreStateError(StoreError):
    """The store's ``state.json`` is corrupt or names a slot file that is missing."""


class StoreEmptyError(StoreError):
    """Nothing is installed in the store (or there is no previous bundle to roll back to)."""


class BundleRejectedError(StoreError):
    """A bundle failed verification (checksums, schema) and was not installed; the old one stays active."""


class SelfTestFailedError(BundleRejectedError):
    """A bundle verified but did not reproduce its golden outputs on any delegate of this device."""


class DowngradeError(BundleRejectedError):
    """The bundle's version is older than the one this store has installed under its name (``allow_downgrade``)."""


class StoreNotFoundError(StoreError):
    """The directory given as a bundle store does not exist or is not a store (no ``state.json``, no ``slots/``)."""


class UnsupportedOpsetError(ModelLoadError):
    """The model's opset (per domain) is newer than the installed runtime supports."""


class UnsupportedOperatorError(ModelLoadError):
    """The model uses an operator (often from a custom domain) that the installed runtime lacks."""


class BundleSignatureError(BundleError):
    """A trust store is configured and the bundle's signature does not satisfy it (``runtimes/signing.py``)."""


class UnsignedBundleError(BundleSignatureError):
    """The bundle has no ``signature.json`` (or none of its signatures is readable)."""


class UntrustedKeyError(BundleSignatureError):
    """The bundle is signed, but by no key of the trust store."""


class RevokedKeyError(BundleSignatureError):
    """The bundle is signed only by keys listed as revoked in the trust store."""


class BadSignatureError(BundleSignatureError):
    """A trusted key's signature does not match: the manifest or a file changed after signing (tampered)."""


class TrustStoreError(ConfigError):
    """The trust-store folder is missing, holds no usable key, or a ``.pub`` / ``revoked.txt`` is malformed."""


class SigningKeyError(ConfigError):
    """A signing key file is missing, unreadable, not an Ed25519 key, or would overwrite an existing key."""


class BundleUnreadableError(BundleError):
    """The bundle path exists but cannot be read: permissions, a pipe or device instead of a file, an I/O error."""


class BundleTooLargeError(UnsafeBundleError):
    """An entry, or the whole bundle, decompresses past a cap of :class:`~edgepack.runtimes.bundle.BundleLimits`."""
