"""``python -m broker_bridge.ejabberd``: run a private ejabberd cluster in the foreground.

Prints every node's addresses and the component secret, creates the accounts given, reports a
node that dies while the others carry on, and stops every node on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from broker_bridge import managed
from broker_bridge.ejabberd.cluster import EjabberdCommandError, ManagedEjabberdCluster
from broker_bridge.managed import BrokerNotInstalledError, BrokerStartError


async def _serve(cluster: ManagedEjabberdCluster, accounts: Mapping[str, str]) -> int:
    async with cluster:
        await cluster.create_accounts(accounts)
        told: list[bool] = []

        def ready() -> None:  # once, when the signals are ours
            if not told:
                told.append(True)
                print(cluster.describe())
                print(f"  accounts created:  {', '.join(accounts) or '(none)'}")
                print(f"state and logs in {cluster.state_dir}\nCtrl-C to stop", flush=True)

        alive = set(range(1, cluster.node_count + 1))
        # a node that dies is reported and the others carry on: that is what a cluster is for
        while not await managed.serve_until_signalled(
                lambda: all(cluster.running(n) for n in alive), ready):
            for n in sorted(alive):
                if not cluster.running(n):
                    alive.discard(n)
                    print(f"ejabberd node {n} exited; see {cluster.log_path(n)}",
                          file=sys.stderr, flush=True)
            if not alive:
                print("every node of the cluster exited", file=sys.stderr)
                return 1
    print("cluster stopped", flush=True)
    return 0


def _ports(text: str) -> tuple[int, ...]:
    return tuple(int(port) for port in text.split(","))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m broker_bridge.ejabberd``: run a cluster in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m broker_bridge.ejabberd",
                                     description="Run a private ejabberd cluster on loopback.")
    parser.add_argument("--state-dir", default="./state/cloud-broker",
                        help="config, spool and logs (default: ./state/cloud-broker)")
    parser.add_argument("--nodes", type=int, default=2, help="cluster size (default: 2)")
    parser.add_argument("--domain", default="csms.local", help="XMPP domain (default: csms.local)")
    parser.add_argument("--c2s-ports", type=_ports, default=None, metavar="PORT,PORT",
                        help="client ports, one per node (default: free ones)")
    parser.add_argument("--component-ports", type=_ports, default=None, metavar="PORT,PORT",
                        help="XEP-0114 component ports, one per node (default: free ones)")
    parser.add_argument("--account", action="append", default=[], metavar="USER:PASSWORD",
                        help="create this account (repeatable)")
    parser.add_argument("--plaintext", action="store_true",
                        help="clients log in without TLS (the cluster listens on loopback "
                             "only; by default they must STARTTLS, verified with "
                             "STATE_DIR/ca/ca.crt)")
    args = parser.parse_args(argv)
    try:
        accounts = dict(a.split(":", 1) for a in args.account)
    except ValueError:
        parser.error("--account takes USER:PASSWORD")
    try:
        cluster = ManagedEjabberdCluster(Path(args.state_dir), nodes=args.nodes,
                                         domain=args.domain,
                                         component_domains=(f"stations.{args.domain}",),
                                         c2s_ports=args.c2s_ports,
                                         component_ports=args.component_ports,
                                         tls=not args.plaintext)
        return asyncio.run(_serve(cluster, accounts))
    except (BrokerNotInstalledError, BrokerStartError, EjabberdCommandError, ValueError) as exc:
        print(f"ejabberd cluster: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
