"""Running the kernel's tools (ip, tc, nft, iptables, ethtool, ss), inside a namespace or not.

Every privileged step of the lab goes through `run`, so that every failure says what is missing:
the tool and the Debian package that has it, the capability, or the kernel feature.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Sequence

# The Debian package of each tool the lab runs (deploy/setup.sh installs them).
PACKAGE_OF_TOOL = {
    "ip": "iproute2",
    "tc": "iproute2",
    "ss": "iproute2",
    "nft": "nftables",
    "iptables": "iptables",
    "ethtool": "ethtool",
    "sysctl": "procps",
}

_CAP_NET_ADMIN = 12
_CAP_SYS_ADMIN = 21  # `ip netns add` mounts the namespace file


class NetlabError(RuntimeError):
    """A lab step failed; the message says which command and, where known, what is missing."""


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` in ``netns`` (the root namespace when None)."""
    return [*argv] if netns is None else ["ip", "netns", "exec", netns, *argv]


def run(argv: Sequence[str], *, netns: str | None = None, check: bool = True,
        input: str | None = None, timeout: float = 20.0) -> str:
    """Run one command to completion (``input`` on its standard input); returns its output.

    With ``check`` a non-zero exit raises `NetlabError` with the command, its standard error and
    a hint at the cause; without it the caller gets the output whatever the exit status.
    """
    full = in_netns(netns, argv)
    try:
        done = subprocess.run(full, capture_output=True, text=True, input=input, timeout=timeout,
                              check=False)
    except FileNotFoundError:
        raise NetlabError(_missing_tool_message(argv[0])) from None
    except subprocess.TimeoutExpired:
        raise NetlabError(f"`{' '.join(full)}` did not finish within {timeout} s") from None
    if check and done.returncode != 0:
        raise NetlabError(f"`{' '.join(full)}` failed (exit {done.returncode}): "
                          f"{done.stderr.strip() or done.stdout.strip()}{_hint(done.stderr)}")
    return done.stdout


def _missing_tool_message(tool: str) -> str:
    package = PACKAGE_OF_TOOL.get(tool)
    where = f"Debian package {package}" if package else "its package"
    return f"`{tool}` is not installed: install {where} (make setup does)"


def _hint(stderr: str) -> str:
    if missing := re.search(r'exec of "([^"]+)" failed: No such file', stderr):
        return f" -- {_missing_tool_message(missing.group(1))}"
    text = stderr.lower()
    if "operation not permitted" in text or "permission denied" in text:
        return " -- needs CAP_NET_ADMIN and CAP_SYS_ADMIN (run as root)"
    if "qdisc kind is unknown" in text or "unknown qdisc" in text:
        return " -- this kernel lacks that queueing discipline (see docs/netlab.md)"
    if "no such file or directory" in text and "netns" in text:
        return " -- the namespace is gone (torn down already?)"
    if "could not process rule" in text or "not supported" in text:
        return " -- this kernel lacks that netfilter feature (see docs/netlab.md)"
    return ""


def _has_capabilities(*bits: int) -> bool:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("CapEff:"):
                effective = int(line.split()[1], 16)
                return all(effective >> bit & 1 for bit in bits)
    return False


@functools.cache
def netns_available() -> str | None:
    """Why this machine cannot run the lab, or None when it can.

    Checks the capabilities, the tools, and then really creates a namespace with a veth pair in
    it: containers often have the tools but not the right to use them. Tests skip with this
    reason, so that a machine without namespaces says so instead of passing silently.
    """
    if not _has_capabilities(_CAP_NET_ADMIN, _CAP_SYS_ADMIN):
        return "network namespaces need CAP_NET_ADMIN and CAP_SYS_ADMIN (run as root)"
    missing = [tool for tool in PACKAGE_OF_TOOL if shutil.which(tool) is None]
    if missing:
        packages = sorted({PACKAGE_OF_TOOL[tool] for tool in missing})
        return (f"missing tools {', '.join(missing)}: install Debian packages "
                f"{' '.join(packages)} (make setup does)")
    probe = f"netlab-probe-{os.getpid()}"
    try:
        run(["ip", "netns", "add", probe])
        try:
            run(["ip", "-n", probe, "link", "add", "name", "a", "type", "veth", "peer",
                 "name", "b"])
            run(["tc", "qdisc", "add", "dev", "a", "root", "tbf", "rate", "1mbit",
                 "burst", "4kb", "latency", "50ms"], netns=probe)
        finally:
            run(["ip", "netns", "del", probe], check=False)
    except NetlabError as error:
        return f"cannot build a namespace with a shaped veth here: {error}"
    return None
