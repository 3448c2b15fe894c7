"""micota: distil long chain-of-thought math reasoning into small models (MiCoTA)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("micota")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"

from micota.errors import UserError  # noqa: E402

__all__ = ["UserError", "__version__"]
