"""A guard that makes every network connection beyond this machine fail, for tests and air-gapped runs.

Hospital deployments run without network access, so nothing in the pipeline may depend on it: no model or
tokenizer download, no telemetry. :func:`block_network` patches Python's ``socket`` module so that
connecting or sending to any address other than loopback, and resolving any host name other than this
machine's, raises :class:`NetworkAccessError` naming the address. Loopback stays open: ``torchrun``'s rendezvous
and the gloo process group use it.

:func:`write_sitecustomize` writes a ``sitecustomize.py`` that installs the guard at interpreter start; putting
its folder first on ``PYTHONPATH`` makes every Python subprocess (bundle runs, ``torchrun`` and its workers)
offline as well. Importing this module has no effect; only the functions patch anything.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

from sista_monai.errors import NetworkAccessError

__all__ = ["NetworkAccessError", "block_network", "network_blocked", "unblock_network", "write_sitecustomize"]

_ORIGINALS: dict[str, Any] = {}


def _is_local_host(host: Any) -> bool:
    """Loopback, unspecified, ``localhost`` or this machine's own name."""
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host in (None, "", "localhost", "localhost.localdomain"):
        return True
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return str(host) == _ORIGINALS.get("gethostname", socket.gethostname)()
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def _is_local_address(address: Any) -> bool:
    return _is_local_host(address[0] if isinstance(address, tuple) and address else address)


def _refuse(what: str, address: Any) -> None:
    raise NetworkAccessError(f"network access is disabled: {what} {address!r} refused (only loopback is allowed)")


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local_address(address):
        _refuse("connect to", address)
    return _ORIGINALS["connect"](self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local_address(address):
        _refuse("connect to", address)
    return _ORIGINALS["connect_ex"](self, address)


def _guarded_sendto(self: socket.socket, data: Any, *args: Any) -> Any:
    address = args[-1]
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local_address(address):
        _refuse("send to", address)
    return _ORIGINALS["sendto"](self, data, *args)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not _is_local_host(host):
        _refuse("name resolution of", host)
    return _ORIGINALS["getaddrinfo"](host, *args, **kwargs)


def network_blocked() -> bool:
    """Whether :func:`block_network` is in effect in this process."""
    return bool(_ORIGINALS)


def block_network() -> None:
    """Install the guard in this process (idempotent)."""
    if _ORIGINALS:
        return
    _ORIGINALS.update(
        connect=socket.socket.connect,
        connect_ex=socket.socket.connect_ex,
        sendto=socket.socket.sendto,
        getaddrinfo=socket.getaddrinfo,
        gethostname=socket.gethostname,
    )
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = _guarded_sendto  # type: ignore[method-assign]
    socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]


def unblock_network() -> None:
    """Remove the guard (restore the original ``socket`` functions)."""
    if not _ORIGINALS:
        return
    socket.socket.connect = _ORIGINALS["connect"]  # type: ignore[method-assign]
    socket.socket.connect_ex = _ORIGINALS["connect_ex"]  # type: ignore[method-assign]
    socket.socket.sendto = _ORIGINALS["sendto"]  # type: ignore[method-assign]
    socket.getaddrinfo = _ORIGINALS["getaddrinfo"]  # type: ignore[assignment]
    _ORIGINALS.clear()


SITECUSTOMIZE = '''"""Written by sista_monai.offline.write_sitecustomize: no network beyond loopback in this interpreter."""
from sista_monai.offline import block_network

block_network()
'''


def write_sitecustomize(folder: str | os.PathLike) -> Path:
    """Write ``folder/sitecustomize.py`` installing the guard; prepend ``folder`` to ``PYTHONPATH`` to use it.

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder
