"""Which server-side paths the app's "Server path" field may read.

On loopback (``--server.address 127.0.0.1``, ``localhost``, ``::1``) only the person at the machine can reach
the app, so any path it can read is allowed, as before. On any other address (an unset ``server.address``
included: Streamlit then listens on every interface) the field reads only below the roots in
``$SCCLIP_DATA_ROOTS`` (``os.pathsep``-separated folders; default: the demo data folder,
:func:`~scclip.explore.locations.data_dir`). Paths are resolved first, so ``..`` and symbolic links that
point out of a root are refused like ``/etc/passwd``.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from scclip.errors import ScclipError
from scclip.explore.locations import data_dir

#: Environment variable naming the folders a non-loopback app may read (``os.pathsep``-separated).
DATA_ROOTS_ENV = "SCCLIP_DATA_ROOTS"


def is_loopback(address: str | None) -> bool:
    """True when ``address`` (Streamlit's ``server.address``) is reachable from this machine only.

    An empty or unset address is not: Streamlit then listens on all interfaces.
    """
    host = str(address or "").strip().strip("[]")
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def data_roots(env: str | None = None) -> list[Path]:
    """The resolved folders of ``$SCCLIP_DATA_ROOTS`` (or ``env``); default ``[data_dir()]``."""
    raw = os.environ.get(DATA_ROOTS_ENV, "") if env is None else env
    parts = [p.strip() for p in raw.split(os.pathsep) if p.strip()]
    roots = [Path(p).expanduser() for p in parts] if parts else [data_dir()]
    return [r.resolve() for r in roots]


def _below(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_server_path(path: str | Path, *, address: str | None, roots: list[Path] | None = None) -> Path:
    """``path`` resolved, if the app listening on ``address`` may read it; else a :class:`ScclipError`.

    Parameters
    ----------
    path
        A path typed into the Data page's "Server path" field (``~`` is expanded).
    address
        The address the app listens on (``st.get_option("server.address")``).
    roots
        Allowed folders on a non-loopback address; default :func:`data_roots`.

    Returns
    -------
    Path
        The path with ``~``, ``..`` and symbolic links resolved.
    """
    p = Path(str(path).strip()).expanduser()
    if is_loopback(address):
        return p
    allowed = data_roots() if roots is None else [Path(r).expanduser().resolve() for r in roots]
    resolved = p.resolve()  # follows symbolic links and removes "..": a link out of a root is out
    if any(_below(resolved, r) for r in allowed):
        return resolved
    shown = ", ".join(str(r) for r in allowed) or "none"
    msg = (
        f"{path} is outside the folders this shared server may read ({shown}): copy the file below one of "
        f"them, or ask the administrator to add its folder to ${DATA_ROOTS_ENV}"
    )
    raise ScclipError(msg)


def check_server_paths(paths, *, address: str | None, roots: list[Path] | None = None) -> list[Path]:
    """:func:`check_server_path` for each of ``paths``; the first refused one raises."""
    return [check_server_path(p, address=address, roots=roots) for p in paths]
