"""The ``csms`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path

from broker_bridge.managed import serve_until_signalled
from broker_bridge.prosody import BrokerNotInstalledError, BrokerStartError, ManagedProsody
from object_model.operations import OperationKind, RemoteOperation, TriggeredMessage

BENCHMARKS = {
    "tree": "object trees: validated writes, history, snapshots, pattern matching",
    "security": "end-to-end signing: sign and verify times, a session pair signed and unsigned",
    "transport": "envelopes/s, latency and priorities through the managed Prosody",
    "faults": "exactly-once delivery while the broker (and a sender) are SIGKILLed",
    "resync": "a cloud CSMS of N stations killed and restarted: time and bytes to consistency",
    "monitoring": "monitoring tasks: CPU per watched write, reports/s via Prosody, bytes/sample vs OCPP",
    "energy": "a simulated site day: our allocation vs equal sharing and FCFS, ms/cycle, energy",
    "hierarchy": "sites in network namespaces behind real uplinks: priority, outages, catch-up",
    "scale": "thousands of stations on site processes: connect-all, a cloud broker restart storm, memory, CPU",
    "stopping": "a loaded `csms demo` stopped by a signal: seconds to exit, lag, what it shed",
    "ocpp": "the OCPP 2.0.1 gateway: 500 chargers boot, charge, take profiles, survive a kill",
}
MODULES = {"ocpp": "ocpp_gateway"}
"""Benchmarks whose module is named otherwise (``bench/ocpp.py`` would shadow the package)."""


def _bench(args: argparse.Namespace) -> int:
    # Benchmarks live in bench/, a layer above actors: run them as their own process rather
    # than importing them, so the layer rules hold.
    argv = [sys.executable, "-m", f"bench.{MODULES.get(args.name, args.name)}", *args.rest]
    os.execv(sys.executable, argv)
    return 0  # not reached


def _lab(args: argparse.Namespace) -> int:
    # the lab lives in bench/, a layer above actors: its own process, as benchmarks are
    os.execv(sys.executable, [sys.executable, "-m", "bench.lab", *args.rest])
    return 0  # not reached


def _demo(args: argparse.Namespace) -> int:
    from actors.app.demo import DemoSettings, run_demo
    from actors.app.wiring import tune_gc
    from actors.runtime.shutdown import exit_process

    tune_gc()
    settings = DemoSettings(sites=args.sites, stations=args.stations, duration=args.duration,
                            json=args.json, state_dir=Path(args.state_dir), speed=args.speed,
                            keep_state=args.keep_state, ocpp_chargers=args.ocpp_chargers)
    summary = asyncio.run(run_demo(settings))
    if args.json:
        print(json.dumps(summary))
    else:
        print("\n".join(f"{k:<20}{v}" for k, v in summary.items()))
    exit_process(0)  # everything is closed: skip freeing the heap (seconds at this scale)


def _broker(args: argparse.Namespace) -> int:
    accounts = {}
    for item in args.account:
        name, sep, password = item.partition("=")
        if not sep or not name or not password:
            print(f"csms broker: --account {item!r}: write it as NAME=PASSWORD", file=sys.stderr)
            return 2
        accounts[name] = password
    try:
        broker = ManagedProsody(Path(args.state_dir), domain=args.domain,
                                component_domains=tuple(args.component_domain)
                                or (f"stations.{args.domain}",),
                                c2s_port=args.c2s_port, component_port=args.component_port,
                                host=args.host, component_secret=args.component_secret,
                                tls=not args.plaintext)
        broker.create_accounts(accounts)
        return asyncio.run(_run_broker(broker))
    except (BrokerNotInstalledError, BrokerStartError, ValueError) as exc:
        print(f"csms broker: {exc}", file=sys.stderr)
        return 1


async def _run_broker(broker: ManagedProsody) -> int:
    # Prosody runs in its own process group: a Ctrl-C reaches only us, and we stop it cleanly.
    def ready() -> None:
        print(broker.endpoint.describe())
        print(f"state and log in {broker.state_dir}\nCtrl-C to stop", flush=True)

    async with broker:
        crashed = not await serve_until_signalled(lambda: broker.running, ready)
    if crashed:
        print(f"csms broker: Prosody exited unexpectedly; see {broker.log_path}", file=sys.stderr)
        return 1
    print("broker stopped", flush=True)
    return 0


def _client(args: argparse.Namespace) -> int:
    from actors.app import client

    try:
        conn = client.Connection.load(Path(args.connect))
        if args.command == "monitor":
            shown = client.run(client.monitor(
                conn, args.actor, args.pattern, every=args.every, above=args.above,
                duration=args.duration, show=lambda line: print(line, flush=True)))
            print(f"# {shown} samples", flush=True)
            return 0
        if args.command == "get":
            lines = client.run(client.get(conn, args.actor, args.keypath))
        elif args.command == "set":
            lines = client.run(client.set_value(conn, args.actor, args.keypath, args.value,
                                                site=args.site))
        else:
            lines = client.run(client.discover(conn, args.actor, args.pattern, args.types))
    except client.ClientError as exc:
        print(f"csms {args.command}: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def _operate(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from actors.app import client

    task = args.task or f"{args.operation}-{int(time.time())}"
    try:
        operation = RemoteOperation(
            task=task, operation=args.operation, evse=args.evse, connector=args.connector,
            immediate=args.immediate, id_token=args.id_token, transaction_id=args.transaction,
            message=args.message, operative=not args.inoperative)
    except ValidationError as exc:
        print(f"csms operate: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    try:
        conn = client.Connection.load(Path(args.connect))
        lines = client.run(client.operate(conn, args.actor, args.station, operation,
                                          wait_s=args.wait))
    except client.ClientError as exc:
        print(f"csms operate: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0 if "succeeded" in lines[0] else 1


def _commission(args: argparse.Namespace) -> int:
    from actors.app.commission import Commissioning

    if args.role == "local_csms" and not args.stations:
        print("csms commission: a local CSMS gets a site CA that names its stations: give "
              "the prefix of their addresses (--stations cs-site1-)", file=sys.stderr)
        return 2
    trust = Commissioning(args.trust)
    chain = trust.certify(args.key_dir, args.address, args.role, days=args.days)
    print(f"{args.address}: certificate ({args.role}, {args.days:g} days) in {chain}")
    print(f"anchor (every actor's [signing] anchor): {trust.anchor}")
    if args.role == "local_csms":
        site_ca = trust.site_ca(args.address, args.stations)
        print(f"site CA ({args.address}'s [signing] site_ca, naming {args.stations}*): "
              f"{site_ca}")
    return 0


def _enroll(args: argparse.Namespace) -> int:
    from actors.app.commission import add_token
    from actors.app.config import ConfigError, load_config
    from broker_bridge.pki import write_file

    try:
        config = load_config(Path(args.config))
    except ConfigError as exc:
        print(f"csms enroll: {exc}", file=sys.stderr)
        return 2
    if config.local is None:
        print("csms enroll: the config has no [local]: tokens are kept by the local CSMS "
              "that issues the station's certificate", file=sys.stderr)
        return 2
    try:
        token = asyncio.run(add_token(config.local.state_dir, args.station,
                                      ttl_s=args.ttl_days * 86_400))
    except ValueError as exc:
        print(f"csms enroll: {exc}", file=sys.stderr)
        return 2
    if args.token_dir is None:
        print(token)
        return 0
    folder = Path(args.token_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_file(folder / f"{args.station}.token", token.encode(), 0o600)
    print(f"{args.station}: one-time token in {folder / (args.station + '.token')} "
          f"(valid {args.ttl_days:g} days): put it in the station's [signing] key_dir")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from actors.app import client
    from actors.app.commission import Commissioning, publish_revocations

    try:
        keys = [bytes.fromhex(k) for k in args.key]
    except ValueError:
        print("csms revoke: --key takes a key id in hex (a station's "
              "security/certificate_serial)", file=sys.stderr)
        return 2
    data = Commissioning(args.trust).revocation_list(args.number, args.address, keys)
    try:
        conn = client.Connection.load(Path(args.connect))
        print(client.run(publish_revocations(conn, data)))
    except client.ClientError as exc:
        print(f"csms revoke: {exc}", file=sys.stderr)
        return 1
    return 0


def _run_actor(args: argparse.Namespace) -> int:
    from actors.app.config import (
        CloudConfig,
        ConfigError,
        GatewayConfig,
        LocalConfig,
        ResourceManagerConfig,
        load_config,
    )
    from actors.app.signing import Signing
    from actors.app.wiring import (
        Running,
        run_until_signalled,
        start_cloud,
        start_gateway,
        start_local,
        start_resource_manager,
        start_stations,
        tune_gc,
    )
    from actors.runtime.shutdown import exit_process

    tune_gc()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"csms {args.command}: {exc}", file=sys.stderr)
        return 2
    section = {"cloud": config.cloud, "local": config.local, "station": config.stations,
               "resource-manager": config.resource_manager, "gateway": config.gateway}
    part = section[args.command]
    if part is None:
        name = {"station": "stations", "resource-manager": "resource_manager"}.get(
            args.command, args.command)
        print(f"csms {args.command}: {args.config} has no [{name}] section", file=sys.stderr)
        return 2

    async def start() -> list[Running]:
        broker, signing = config.broker, Signing.of(config.signing)
        if isinstance(part, CloudConfig):
            return [await start_cloud(broker, part, signing=signing)]
        if isinstance(part, LocalConfig):
            return [await start_local(broker, part, uplink=config.uplink, signing=signing)]
        if isinstance(part, ResourceManagerConfig):
            return [await start_resource_manager(broker, part, signing=signing)]
        if isinstance(part, GatewayConfig):
            running, gateway = await start_gateway(broker, part, signing=signing)
            print(f"csms gateway: chargers connect at {gateway.url}<identity>", flush=True)
            return [running]
        return [await start_stations(broker, part, signing=signing)]

    def ready(running: list[Running]) -> None:
        actors = ", ".join(a.address for r in running for a in r.actors[:5])
        print(f"csms {args.command}: running {actors}{' ...' if len(running[0].actors) > 5 else ''}"
              f"; Ctrl-C to stop", flush=True)

    try:
        code = asyncio.run(run_until_signalled(start, ready, config.metrics))
    except (ConnectionError, OSError) as exc:
        print(f"csms {args.command}: {exc}", file=sys.stderr)
        return 1
    exit_process(code)  # everything is closed: skip freeing the heap (seconds at this scale)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="csms", description="An IEC 63110-style charging station management system."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="run a whole local-plus-cloud hierarchy of simulated "
                          "stations on the managed broker")
    demo.add_argument("--sites", type=int, default=2, help="local CSMS (sites), default 2")
    demo.add_argument("--stations", type=int, default=10, help="stations per site, default 10")
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds (default: until Ctrl-C)")
    demo.add_argument("--json", action="store_true", help="print only a final JSON summary")
    demo.add_argument("--ocpp-chargers", type=int, default=2,
                      help="simulated OCPP 2.0.1 chargers per site, through the site's gateway "
                           "(default 2; 0: no gateway)")
    demo.add_argument("--speed", type=float, default=120.0,
                      help="simulated seconds per real second in the stations (default 120)")
    demo.add_argument("--state-dir", default="state/demo",
                      help="where the broker, stores and connect.json live")
    demo.add_argument("--keep-state", action="store_true",
                      help="keep the previous run's stores (stations keep their epochs)")
    demo.set_defaults(func=_demo)
    bench = sub.add_parser("bench", help="run a benchmark and print its figures")
    bench.add_argument("name", choices=sorted(BENCHMARKS),
                       help="; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items()))
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="options of the benchmark (--json)")
    bench.set_defaults(func=_bench)
    lab = sub.add_parser("lab", help="the researcher's lab: a scenario on this system and on "
                         "OCPP 2.0.1 over the same impaired links (docs/lab.md)")
    lab.add_argument("rest", nargs=argparse.REMAINDER,
                     help="run SCENARIO.toml | report RUN_DIR | calibrate | results RUN_DIR...")
    lab.set_defaults(func=_lab)
    broker = sub.add_parser("broker", help="run the managed Prosody broker in the foreground")
    broker.add_argument("--state-dir", default="./state/broker",
                        help="config, data and log directory (default: ./state/broker)")
    broker.add_argument("--domain", default="csms.local",
                        help="XMPP domain of the accounts (default: csms.local); "
                             "components get stations.DOMAIN, rooms rooms.DOMAIN")
    broker.add_argument("--c2s-port", type=int, default=None,
                        help="client port (default: a free loopback port)")
    broker.add_argument("--component-port", type=int, default=None,
                        help="XEP-0114 component port (default: a free loopback port)")
    broker.add_argument("--host", default="127.0.0.1",
                        help="the address to listen on (default: 127.0.0.1)")
    broker.add_argument("--component-domain", action="append", default=[],
                        help="a component domain (repeat for several; default: "
                             "stations.DOMAIN)")
    broker.add_argument("--component-secret", default=None,
                        help="the components' secret (default: made once, kept in the "
                             "state directory)")
    broker.add_argument("--plaintext", action="store_true",
                        help="clients log in without TLS (loopback only; by default they "
                             "must STARTTLS, verified with STATE_DIR/ca/ca.crt)")
    broker.add_argument("--account", action="append", default=[], metavar="NAME=PASSWORD",
                        help="create (or reset) an account on DOMAIN; repeat for several")
    broker.set_defaults(func=_broker)
    for name, what in (("cloud", "a cloud CSMS"), ("local", "a site's local CSMS"),
                       ("station", "a host of simulated stations"),
                       ("gateway", "an OCPP 2.0.1 gateway: each charger a station actor "
                                   "(docs/ocpp-gateway.md)"),
                       ("resource-manager", "a site's resource manager (grid envelope, S2)")):
        runner = sub.add_parser(name, help=f"run {what} from a TOML config "
                                "(docs/deployment.md)")
        runner.add_argument("--config", required=True, help="the deployment file")
        runner.set_defaults(func=_run_actor)
    connect = argparse.ArgumentParser(add_help=False)
    connect.add_argument("--connect", default="state/demo/connect.json",
                         help="how to reach the system (written by csms demo)")
    get = sub.add_parser("get", parents=[connect], help="read a value (or a subtree) of an actor")
    get.add_argument("actor", help="an actor address: cloud, local-site1, cs-site1-3...")
    get.add_argument("keypath", help="e.g. evse/1/status, or stations/cs-site1-3/evse/1/status "
                     "at a CSMS")
    get.set_defaults(func=_client)
    put = sub.add_parser("set", parents=[connect], help="write a value (typed by the actor)")
    put.add_argument("actor")
    put.add_argument("keypath", help="e.g. evse/1/permissions/max_power_w at a station, or "
                     "stations/*/evse/1/permissions/max_power_w at a CSMS for all its stations "
                     "at once")
    put.add_argument("--site", metavar="LOCAL_CSMS",
                     help="with stations/*/...: only the stations of this site (local-site1)")
    put.add_argument("value", help="as text; the actor parses it by the type it declares")
    put.set_defaults(func=_client)
    find = sub.add_parser("discover", parents=[connect],
                          help="list the values matching a pattern (* one segment, ** any)")
    find.add_argument("actor")
    find.add_argument("pattern", help="e.g. evse/*/connector/*/status or stations/*/evse/*/status")
    find.add_argument("--types", action="store_true", help="show each value's type and access")
    find.set_defaults(func=_client)
    watch = sub.add_parser("monitor", parents=[connect],
                           help="watch values live through a CSMS (a monitoring task)")
    watch.add_argument("actor", help="a CSMS (cloud, local-site1) or a station")
    watch.add_argument("pattern", help="e.g. stations/cs-site1-3/evse/*/meter/** at a CSMS")
    how = watch.add_mutually_exclusive_group()
    how.add_argument("--every", type=float, metavar="S", help="sample every S seconds")
    how.add_argument("--on-change", action="store_true", help="every change (the default)")
    how.add_argument("--above", type=float, metavar="X", help="only crossings above X")
    watch.add_argument("--for", dest="duration", type=float, metavar="S",
                       help="stop after S seconds (default: Ctrl-C)")
    watch.set_defaults(func=_client)
    operate = sub.add_parser("operate", parents=[connect],
                             help="ask a station to do something now (a task whose result is "
                             "its answer): reset, start or stop charging, unlock, trigger")
    operate.add_argument("actor", help="a CSMS (cloud, local-site1), or the station itself")
    operate.add_argument("station", help="the station (ocpp-site1-1); '' when ACTOR is it")
    operate.add_argument("operation", choices=[kind.value for kind in OperationKind])
    operate.add_argument("--evse", type=int)
    operate.add_argument("--connector", type=int)
    operate.add_argument("--immediate", action="store_true", help="reset now, not when idle")
    operate.add_argument("--id-token", default="", help="start_charging: the token")
    operate.add_argument("--transaction", default="", help="stop_charging: its id")
    operate.add_argument("--message", choices=[m.value for m in TriggeredMessage],
                         help="trigger_message: what to send")
    operate.add_argument("--inoperative", action="store_true",
                         help="change_availability: make it inoperative (default operative)")
    operate.add_argument("--task", help="the task id (default: the operation and the time)")
    operate.add_argument("--wait", type=float, default=30.0, metavar="S",
                         help="follow the task this long (default 30 s)")
    operate.set_defaults(func=_operate)
    roles = ("cloud_csms", "local_csms", "resource_manager", "operator")
    commission = sub.add_parser("commission", help="certify an actor with the operator's root "
                                "(made in --trust on first use)")
    commission.add_argument("--trust", required=True, help="the operator's root directory")
    commission.add_argument("--key-dir", required=True,
                            help="the actor's [signing] key_dir (its keys are made there)")
    commission.add_argument("--role", required=True, choices=roles)
    commission.add_argument("--days", type=float, default=30.0)
    commission.add_argument("--stations", metavar="PREFIX",
                            help="with --role local_csms: the prefixes of the addresses its "
                            "site CA may name, comma-separated (cs-site1-,ocpp-site1-)")
    commission.add_argument("address")
    commission.set_defaults(func=_commission)
    enroll = sub.add_parser("enroll", help="a one-time token a station enrolls with at its "
                            "local CSMS")
    enroll.add_argument("--config", required=True, help="the local CSMS's TOML")
    enroll.add_argument("--ttl-days", type=float, default=7.0)
    enroll.add_argument("--token-dir", help="write <station>.token here (mode 0600) instead "
                        "of printing it")
    enroll.add_argument("station")
    enroll.set_defaults(func=_enroll)
    revoke = sub.add_parser("revoke", parents=[connect], help="publish a revocation list at "
                            "the cloud, which passes it to every site")
    revoke.add_argument("--trust", required=True, help="the operator's root directory")
    revoke.add_argument("--number", type=int, required=True,
                        help="higher than the last list's (a lower one is refused: stale)")
    revoke.add_argument("--key", action="append", default=[], metavar="KEY_ID",
                        help="a revoked key (hex: a station's security/certificate_serial), "
                        "the actor itself not: it may enroll again with a new key")
    revoke.add_argument("address", nargs="*", help="the actors revoked (all of them: the list "
                        "replaces the last)")
    revoke.set_defaults(func=_revoke)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("CSMS_LOG_LEVEL", "WARNING").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
