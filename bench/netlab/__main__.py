"""A lab for humans: build sites with impaired uplinks and leave them up, or take them down.

    python -m bench.netlab up --sites 2 --profile reference
    ip netns exec nls1 python -m bench.netlab.traffic serve --bind 198.19.1.2
    python -m bench.netlab down
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from bench.netlab.commands import NetlabError
from bench.netlab.lab import Lab, sweep
from bench.netlab.profile import PROFILES


def _up(args: argparse.Namespace) -> None:
    log_dir = Path(args.log_dir or f"/tmp/netlab-{args.prefix}")
    lab = Lab(args.prefix, seed=args.seed, log_dir=log_dir)
    try:
        profile = PROFILES[args.profile]
        for index in range(1, args.sites + 1):
            lab.add_site(index, profile)
    except BaseException:
        lab.close()
        raise
    lab.detach()
    settings = ", ".join(f"{k}={v}" for k, v in asdict(profile).items() if v)
    print(f"cloud (root namespace): {lab.cloud_address}")
    for site in lab.sites.values():
        print(f"site {site.index}: namespace {site.namespace} at {site.address}, "
              f"router {site.router_namespace}")
    print(f"uplinks: {args.profile} ({settings or 'unimpaired'}); process logs in {lab.log_dir}")
    print(f"run a command in a site: ip netns exec {args.prefix}s1 COMMAND")
    print(f"take it down: python -m bench.netlab down --prefix {args.prefix}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.netlab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--prefix", default="nl", help="names of the lab's namespaces and links")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", parents=[common], help="build sites and leave them running")
    up.add_argument("--sites", type=int, default=1)
    up.add_argument("--profile", choices=sorted(PROFILES), default="reference")
    up.add_argument("--seed", type=int, default=0)
    up.add_argument("--log-dir", help="where the delayers log (default /tmp/netlab-PREFIX)")
    commands.add_parser("down", parents=[common],
                        help="remove the lab's namespaces, links and processes")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            _up(args)
        else:
            sweep(args.prefix)
            print(f"lab {args.prefix!r} is down")
    except NetlabError as error:
        sys.exit(f"netlab: {error}")


if __name__ == "__main__":
    main()
