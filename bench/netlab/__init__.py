"""Network labs: sites in network namespaces behind routers, joined to the cloud by real uplinks.

Build a site whose uplink has a rate, a bottleneck buffer, loss, delay and jitter, cut it and
restore it, run processes in it, count what crosses it::

    with Lab("nl") as lab:
        site = lab.add_site(1, PROFILES["reference"])
        server = lab.spawn([...])            # the cloud's side: binds lab.cloud_address
        client = site.spawn([...])           # inside the site: site.address
        site.outage("drop"); site.restore()
        site.counters().up.bytes, site.uplink_tcp_connections()

docs/netlab.md explains what each impairment is made of and the kernel's pitfalls.
"""

from bench.netlab.commands import NetlabError, netns_available
from bench.netlab.lab import Lab, Site, TcpConnection, sweep
from bench.netlab.processes import Process
from bench.netlab.profile import PROFILES, LinkProfile
from bench.netlab.router import OUTAGES, DirectionCounters, Outage, UplinkCounters

__all__ = [
    "OUTAGES",
    "PROFILES",
    "DirectionCounters",
    "Lab",
    "LinkProfile",
    "NetlabError",
    "Outage",
    "Process",
    "Site",
    "TcpConnection",
    "UplinkCounters",
    "netns_available",
    "sweep",
]
