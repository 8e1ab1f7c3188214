"""Business logic of the dew point pipeline: one module per stage, no orchestrator imports."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dewpoint-pipeline")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
