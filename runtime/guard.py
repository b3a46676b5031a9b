"""Strict mode: refuse every network connection that would leave this machine.

Implemented with an audit hook (``sys.addaudithook``) on every event CPython's
socket module raises before it resolves a name, sends a datagram or opens a
connection: ``socket.getaddrinfo``, ``socket.gethostbyname``,
``socket.gethostbyaddr``, ``socket.getnameinfo``, ``socket.connect``,
``socket.sendto`` and ``socket.sendmsg``. That catches every Python-level user,
whatever HTTP client it goes through (urllib, requests/urllib3, httpx, aiohttp,
asyncio), including ``connect_ex`` and sockets created before activate().

What an in-process guard cannot see: child processes (``curl``, ``wget``,
``git``, a ``subprocess`` of any kind) and native code with its own network
stack (e.g. a Rust download helper). For those, ``bundle run --no-network``
runs the whole command in a network namespace with loopback only, where the
operating system allows one (runtime.netns).

Recording mode (:func:`record`, for ``bundle capture``): the same hook reports each
connection to a non-local host and each program started (``subprocess.Popen``) to a
callback instead of refusing it; runtime.netlog writes them down.

Audit hooks cannot be removed, so the hook stays installed and `uninstall()`
switches it off. It returns at once for every non-socket event.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable

from runtime import constants
from runtime.errors import OfflineViolation

#: (host, port, clues from the calling frames) -> the explanation appended to the error
HintFn = Callable[[str, "int | None", dict[str, str]], str]

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class _State:
    active = False
    hook_installed = False
    hint: HintFn | None = None
    allowed: frozenset[str] = frozenset()
    #: recording mode: (kind, detail) for "connect" (host, port) and "exec" (program,)
    recorder: Callable[[str, tuple], None] | None = None


def is_local_host(host: object, allowed: frozenset[str] = frozenset()) -> bool:
    """True for loopback and unspecified addresses, localhost names, and `allowed` hosts."""
    if host is None:
        return True
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("ascii", "replace")
    if not isinstance(host, str):
        return True  # not an internet address (e.g. AF_NETLINK ints)
    name = host.strip().strip("[]").split("%", 1)[0].lower().rstrip(".")
    if name in ("", "<broadcast>") or name in _LOCAL_NAMES or name.endswith(".localhost"):
        return name != "<broadcast>"
    if name in allowed:
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False  # a name that would need DNS: not local
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # 0.0.0.0 / :: reach this machine when connected to.
    return ip.is_loopback or ip.is_unspecified


def _clues() -> dict[str, str]:
    """`repo_id` / `url` / `filename` found in the callers' frames: what was being fetched."""
    clues: dict[str, str] = {}
    frame = sys._getframe(2)
    for _ in range(80):
        if frame is None:
            break
        loc = frame.f_locals
        for key in ("repo_id", "url", "filename"):
            value = loc.get(key)
            if value is None or callable(value):
                continue
            text = str(value)
            if not text or len(text) > 500:
                continue
            if key == "url" and not text.startswith(("http://", "https://")):
                # http.client's `url` is only the request path; a caller further up has the URL.
                clues.setdefault("path", text)
                continue
            clues.setdefault(key, text)
        frame = frame.f_back
    return clues


def _violation(host: str, port: int | None) -> OfflineViolation:
    clues = _clues()
    where = f"{host}:{port}" if port is not None else host
    message = (
        f"strict offline mode (runtime.activate(strict=True)) refused a network "
        f"connection to {where}"
    )
    if "url" not in clues and "path" in clues and clues["path"].startswith("/"):
        clues["url"] = f"https://{host}{clues['path']}"
    if "url" in clues:
        message += f" while fetching {clues['url']}"
    hint = ""
    if _State.hint is not None:
        try:
            hint = _State.hint(host, port, clues)
        except Exception:  # a broken hint must not hide the violation itself
            hint = ""
    if hint:
        message += ".\n" + hint
    return OfflineViolation(message, host=host, port=port)


def _hook(event: str, args: tuple) -> None:
    # Called for every audit event in the process (open, import, exec, ...): stay cheap.
    if _State.recorder is not None and (event == "subprocess.Popen" or event == "socket.connect"):
        _record(event, args)
    if not _State.active or not event.startswith("socket."):
        return
    if event == "socket.getaddrinfo":
        host, port = args[0], args[1]
    elif event in ("socket.gethostbyname", "socket.gethostbyaddr"):
        host, port = args[0], None  # a name or address to look up: DNS
    elif event == "socket.getnameinfo":
        address = args[0]
        if not isinstance(address, tuple) or not address:
            return
        host, port = address[0], address[1] if len(address) > 1 else None
    elif event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        sock, address = args[0], args[1]
        if getattr(sock, "family", None) not in _INET_FAMILIES or not isinstance(address, tuple):
            # unix sockets, netlink, ...: never leave the machine; sendmsg on a
            # connected socket has no address (its connect was checked)
            return
        host, port = address[0], address[1] if len(address) > 1 else None
    else:
        return
    if is_local_host(host, _State.allowed):
        return
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("ascii", "replace")
    raise _violation(str(host), port if isinstance(port, int) else None)


def _record(event: str, args: tuple) -> None:
    recorder = _State.recorder
    try:
        if event == "subprocess.Popen":
            recorder("exec", (args[0],))
            return
        sock, address = args[0], args[1]
        if getattr(sock, "family", None) in _INET_FAMILIES and isinstance(address, tuple):
            host = address[0]
            if not is_local_host(host):
                recorder("connect", (host, address[1] if len(address) > 1 else None))
    except Exception:  # recording must never break the program it watches
        pass


def record(recorder: Callable[[str, tuple], None] | None) -> None:
    """Recording mode: report connections to non-local hosts and started programs to
    ``recorder(kind, detail)`` (None stops it). Independent of strict mode."""
    _State.recorder = recorder
    if recorder is not None and not _State.hook_installed:
        sys.addaudithook(_hook)
        _State.hook_installed = True


def install(hint: HintFn | None = None) -> None:
    """Turn strict mode on (idempotent). `hint` explains what the caller probably forgot."""
    _State.hint = hint
    # This machine's own name resolves from /etc/hosts and torch.distributed looks it
    # up; the address it gives is still checked at connect time.
    _State.allowed = constants.allowed_hosts() | {socket.gethostname().lower()}
    if not _State.hook_installed:
        sys.addaudithook(_hook)
        _State.hook_installed = True
    _State.active = True


def uninstall() -> None:
    """Turn strict mode off (the audit hook stays, inert)."""
    _State.active = False
    _State.hint = None


def is_active() -> bool:
    return _State.active
