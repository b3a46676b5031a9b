"""`bundle run --no-network`: move this process into a network namespace with loopback only.

The strict guard (runtime.guard) sees what Python code does in this process. A
child process (curl, wget, git, a shell script) or native code with its own
network stack is outside it. A network namespace is not: once this process is
in a fresh one, it and every process it starts see only their own loopback
interface, whatever they are written in.

Linux only. As root, ``unshare(CLONE_NEWNET)``; as any other user, together
with a user namespace that maps the user to itself (the same uid and gid inside),
where the kernel allows unprivileged user namespaces. Containers often forbid
both (Docker's default seccomp profile, Kaggle); there, this fails with an error
that says so, and ``docker run --network none`` is the way to get the same.

Loopback in the new namespace is brought up, so servers a run starts itself
(torch.distributed's rendezvous, a local metrics server) still work; servers
outside the namespace (also on 127.0.0.1) are not reachable.
"""

from __future__ import annotations

import os

from runtime.errors import NetworkNamespaceError

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def _unshare(flags: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _loopback_up() -> None:
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sh", fcntl.ioctl(s, _SIOCGIFFLAGS, struct.pack("16sh", b"lo", 0))[:18])[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | _IFF_UP))


def interfaces() -> list[str]:
    """Names of the network interfaces this process sees."""
    import socket

    return [name for _, name in socket.if_nameindex()]


def isolate() -> str:
    """Enter a fresh network namespace with loopback only; returns a one-line description.

    Call it before any thread is started (a user namespace needs a single-threaded
    process). Every process started afterwards inherits the namespace.

    Raises:
        NetworkNamespaceError: not Linux, or the kernel / container refused it;
            the message names the cause and the alternative.
    """
    import sys

    if not sys.platform.startswith("linux"):
        raise NetworkNamespaceError(
            f"--no-network needs Linux network namespaces; this is {sys.platform}: "
            "use strict mode (--strict) alone, or a container started with --network none"
        )
    uid, gid = os.getuid(), os.getgid()
    try:
        if os.geteuid() == 0:
            _unshare(_CLONE_NEWNET)
            how = "network namespace"
        else:
            _unshare(_CLONE_NEWUSER | _CLONE_NEWNET)
            # Map the user to itself, so files keep their owners and getuid() its answer.
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{uid} {uid} 1")
            _write("/proc/self/gid_map", f"{gid} {gid} 1")
            how = "user + network namespace"
        _loopback_up()
    except OSError as e:
        reason = e.strerror or str(e)
        raise NetworkNamespaceError(
            f"--no-network: the system refused a private network namespace ({reason}). "
            "Containers usually forbid it (seccomp) and some kernels disable unprivileged "
            "user namespaces (sysctl kernel.unprivileged_userns_clone / user.max_user_namespaces). "
            "Run as root, start the container with `docker run --network none`, or use "
            "--strict alone (it guards this Python process, not the programs it starts)"
        ) from None
    seen = [name for name in interfaces() if name != "lo"]
    if seen:  # cannot happen in a fresh namespace; never claim isolation that is not there
        raise NetworkNamespaceError(f"--no-network: interfaces besides loopback remain: {seen}")
    return f"no network: this run is in a private {how} with loopback only"
