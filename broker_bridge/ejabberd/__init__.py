"""The cloud broker at scale: a private ejabberd cluster (see ``cluster``)."""

from broker_bridge.ejabberd.cluster import (
    INSTALL_HINT,
    EjabberdCommandError,
    EjabberdInstall,
    ManagedEjabberdCluster,
)

__all__ = ["INSTALL_HINT", "EjabberdCommandError", "EjabberdInstall", "ManagedEjabberdCluster"]
