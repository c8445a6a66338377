"""The embedded local platform: mongod + tansu + SMTP sink + all services, one command."""

from .servers import create_topics, find_mongod, find_tansu, free_port, start_broker, start_mongo
from .supervisor import ManagedProcess, ProcessFailed, Supervisor

__all__ = [
    "ManagedProcess",
    "Platform",
    "PlatformConfig",
    "ProcessFailed",
    "Supervisor",
    "create_topics",
    "find_mongod",
    "find_tansu",
    "free_port",
    "start_broker",
    "start_mongo",
]


def __getattr__(name):  # lazy: importing the package must not import every dependency
    if name in ("Platform", "PlatformConfig"):
        from . import platform

        return getattr(platform, name)
    raise AttributeError(name)
