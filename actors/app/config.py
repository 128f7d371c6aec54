"""Deployment configuration: one TOML file per process, checked strictly.

Sections (see docs/deployment.md for a full example):

``[broker]``    how to reach the XMPP broker, and which domain each address lives on
``[cloud]``     a cloud CSMS
``[local]``     a site's local CSMS
``[stations]``  a host of simulated stations (one component connection for all of them)
``[metrics]``   where the process serves Prometheus metrics (absent, or ``port = 0``: nowhere)

Unknown keys and wrong types are errors that name the file, the section and the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from broker_bridge.envelope import valid_address
from object_model import Role


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message says where and why."""


def _address_problems(key: str, *addresses: str | None) -> list[str]:
    return [f"{key}: {a!r} is not an actor address (letters, digits, '.', '_', '-'; at most "
            "128 characters)" for a in addresses if a is not None and not valid_address(a)]


@dataclass(frozen=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    c2s_port: int = 5222
    component_port: int = 5347
    domain: str = "csms.local"
    muc_domain: str = "rooms.csms.local"
    routes: tuple[tuple[str, str], ...] = ()
    tls: bool = False

    def problems(self) -> list[str]:
        out = [f"{name}: {port} is not a TCP port" for name, port in
               (("c2s_port", self.c2s_port), ("component_port", self.component_port))
               if not 0 < port < 65536]
        out += [f"routes[{i}]: a route is [address pattern, domain], got {list(route)}"
                for i, route in enumerate(self.routes) if len(route) != 2]
        return out


@dataclass(frozen=True)
class CloudConfig:
    address: str = "cloud"
    password: str = ""
    state_dir: str = "state/cloud"
    site_secrets: dict[str, str] = field(default_factory=dict)
    station_secret: str = ""
    operators: tuple[str, ...] = ("operator",)

    def problems(self) -> list[str]:
        return (_address_problems("address", self.address)
                + _address_problems("site_secrets", *self.site_secrets)
                + _address_problems("operators", *self.operators))


@dataclass(frozen=True)
class LocalConfig:
    address: str = "local-site1"
    password: str = ""
    state_dir: str = "state/local-site1"
    site: str = "site1"
    provisioning_secret: str = ""
    cloud: str | None = None
    upstream_secret: str = ""
    operators: tuple[str, ...] = ("operator",)
    resource_manager: str | None = None
    fallback_limit_w: float = 0.0
    allocation_interval_s: float = 3.0

    def problems(self) -> list[str]:
        out = (_address_problems("address", self.address)
               + _address_problems("cloud", self.cloud)
               + _address_problems("resource_manager", self.resource_manager)
               + _address_problems("operators", *self.operators))
        if self.fallback_limit_w < 0:
            out.append(f"fallback_limit_w: must be 0 or more, got {self.fallback_limit_w}")
        if not self.allocation_interval_s > 0:
            out.append(f"allocation_interval_s: must be more than 0, got "
                       f"{self.allocation_interval_s}")
        return out


@dataclass(frozen=True)
class ResourceManagerConfig:
    """A site's resource manager: its account, its local CSMS, its S2 peer, and the profile a
    fresh one starts from (operators change it live with ``csms set``)."""

    address: str = "rm-site1"
    password: str = ""
    state_dir: str = "state/rm-site1"
    site_csms: str = "local-site1"
    s2_peer: str | None = None
    fuse_limit_w: float = 100_000.0
    operators: tuple[str, ...] = ("operator",)

    def problems(self) -> list[str]:
        out = (_address_problems("address", self.address)
               + _address_problems("site_csms", self.site_csms)
               + _address_problems("s2_peer", self.s2_peer)
               + _address_problems("operators", *self.operators))
        if not 0 < self.fuse_limit_w <= 1e8:
            out.append(f"fuse_limit_w: must be more than 0 and at most 1e8 W, got "
                       f"{self.fuse_limit_w}")
        return out


@dataclass(frozen=True)
class StationsConfig:
    component: str = "stations.csms.local"
    component_secret: str = ""
    ids: tuple[str, ...] = ()
    csms: str = "local-site1"
    csms_role: str = "local_csms"
    provisioning_secret: str = ""
    state_dir: str = "state/stations"
    speed: float = 1.0
    tick_s: float = 1.0
    evse_count: int = 2
    dc: bool = False
    arrivals_per_evse_per_h: float = 0.25
    seed: int | None = None
    operators: tuple[str, ...] = ("operator",)

    @property
    def role(self) -> Role:
        return Role(self.csms_role)

    def problems(self) -> list[str]:
        out = _address_problems("ids", *self.ids) + _address_problems("csms", self.csms)
        out += _address_problems("operators", *self.operators)
        repeated = sorted({i for i in self.ids if self.ids.count(i) > 1})
        if repeated:
            out.append(f"ids: {', '.join(repeated[:5])} given more than once")
        if self.csms_role not in (Role.LOCAL_CSMS.value, Role.CLOUD_CSMS.value):
            out.append(f"csms_role: {self.csms_role!r} is not local_csms or cloud_csms")
        for key, value in (("speed", self.speed), ("tick_s", self.tick_s)):
            if not value > 0:
                out.append(f"{key}: must be more than 0, got {value}")
        if not 1 <= self.evse_count <= 16:
            out.append(f"evse_count: must be 1 to 16, got {self.evse_count}")
        if self.arrivals_per_evse_per_h < 0:
            out.append(f"arrivals_per_evse_per_h: must be 0 or more, got "
                       f"{self.arrivals_per_evse_per_h}")
        return out


@dataclass(frozen=True)
class MetricsConfig:
    port: int = 0  # 0: no metrics
    host: str = "127.0.0.1"

    def problems(self) -> list[str]:
        if 0 <= self.port < 65536:
            return []
        return [f"port: {self.port} is not a TCP port (0: no metrics)"]


@dataclass(frozen=True)
class Config:
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    cloud: CloudConfig | None = None
    local: LocalConfig | None = None
    stations: StationsConfig | None = None
    resource_manager: ResourceManagerConfig | None = None
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


def _convert(value: Any, kind: Any, where: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return None if value is None else _convert(value, inner[0], where)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        inner_kind = args[0]
        return tuple(_convert(v, inner_kind, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if kind is float and type(value) is int:
        return float(value)
    if kind in (str, int, float, bool) and type(value) is not kind:
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r:.40}")
    return value


def _section(cls: type[Any], raw: dict[str, Any], where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(names))}")
    values = {key: _convert(value, hints[key], f"{where}.{key}") for key, value in raw.items()}
    section = cls(**values)
    problems = section.problems()
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    return section


def load_config(path: Path | str) -> Config:
    """Read and check a TOML deployment file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    sections = {"broker": BrokerConfig, "cloud": CloudConfig, "local": LocalConfig,
                "stations": StationsConfig, "resource_manager": ResourceManagerConfig,
                "metrics": MetricsConfig}
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) [{'], ['.join(unknown)}]; known: "
                          f"[{'], ['.join(sections)}]")
    parts = {name: _section(cls, raw[name], f"{path} [{name}]")
             for name, cls in sections.items() if name in raw}
    return Config(**parts)
