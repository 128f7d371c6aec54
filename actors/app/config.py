"""Deployment configuration: one TOML file per process, checked strictly.

Sections (see docs/deployment.md for a full example):

``[broker]``            how to reach the XMPP broker, and which domain each address lives on
``[uplink]``            a local CSMS's second link: the cloud's broker, across the site's
                        uplink (absent: the cloud is on the site's broker)
``[cloud]``             a cloud CSMS
``[local]``             a site's local CSMS
``[stations]``          a host of simulated stations (one component connection for all of them)
``[resource_manager]``  a site's resource manager
``[metrics]``           where the process serves Prometheus metrics (absent, or ``port = 0``:
                        nowhere)

Each actor's section *is* its settings (``LocalConfig`` is a ``LocalSettings`` with the
account it logs in with and its state directory), and the actor is given it as it is. A few
keys of the file are short forms (``SHORT_FORMS``): ``allocation_interval_s`` in ``[local]``
is ``energy.interval_s``, and ``[stations]`` takes its simulator's keys (``evse_count``,
``dc``, ``speed``, ``tick_s``, ``arrivals_per_evse_per_h``) directly.

Values are checked as the file has them (a string is not a number, a number with a fraction
is not an integer), and every mistake names the file, the section and the key.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from actors.csms.settings import CloudSettings, LocalSettings
from actors.resource_manager.actor import ResourceManagerSettings
from actors.runtime.settings import Address, Settings, addresses, positive
from actors.station.actor import StationSettings
from actors.station.simulated import SimulatorSettings
from broker_bridge.xmpp import is_loopback
from object_model import Role


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message says where and why."""


class BrokerConfig(Settings):
    """``[broker]``: where the broker is and how addresses map onto it, and how the link to
    it keeps its queue in our session (``send_window_bytes``, ``notsent_lowat``: see
    ``XmppSettings``; ``rate_kbit``: pace what leaves at 90 % of the link's known rate, so no
    queue forms below us at all; all off by default, for a LAN).

    ``tls`` (on by default) starts TLS and verifies the broker against ``cafile`` (the CA
    that issued its certificate: a managed broker's is ``<state_dir>/ca/ca.crt``; without
    one, the system's store). ``tls = false`` is accepted for a broker on loopback only."""

    host: str = "127.0.0.1"
    c2s_port: int = 5222
    component_port: int = 5347
    domain: str = "csms.local"
    muc_domain: str = "rooms.csms.local"
    routes: tuple[tuple[str, ...], ...] = ()
    tls: bool = True
    cafile: str | None = None
    send_window_bytes: int | None = None
    notsent_lowat: int | None = None
    rate_kbit: float | None = None
    dead_after_s: float | None = None
    bulk_frame_bytes: int | None = None

    @field_validator("send_window_bytes")
    @classmethod
    def _window(cls, window: int | None) -> int | None:
        if window is not None and window < 4096:
            raise ValueError(f"{window} bytes is too small a window (at least 4096)")
        return window

    @field_validator("rate_kbit")
    @classmethod
    def _rate(cls, rate: float | None) -> float | None:
        if rate is not None and rate <= 0:
            raise ValueError("a link rate is positive (leave it out: no pacing)")
        return rate
    # more nodes of a clustered broker: [host, c2s_port, component_port], tried in turn
    alternates: tuple[tuple[str, int, int], ...] = ()

    @model_validator(mode="after")
    def _plaintext_on_loopback_only(self) -> Self:
        if not self.tls and not is_loopback(self.host):
            raise ValueError(f"tls = false is allowed only for a broker on loopback, not "
                             f"{self.host}: turn TLS on (and give the broker's cafile)")
        return self

    @field_validator("c2s_port", "component_port")
    @classmethod
    def _port(cls, port: int) -> int:
        if not 0 < port < 65536:
            raise ValueError(f"{port} is not a TCP port")
        return port

    @field_validator("alternates")
    @classmethod
    def _alternates(cls, nodes: tuple[tuple[str, int, int], ...]
                    ) -> tuple[tuple[str, int, int], ...]:
        for i, (_, c2s, component) in enumerate(nodes):
            for port in (c2s, component):
                if not 0 < port < 65536:
                    raise ValueError(f"alternates[{i}]: {port} is not a TCP port")
        return nodes

    @field_validator("routes")
    @classmethod
    def _routes(cls, routes: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
        for i, route in enumerate(routes):
            if len(route) != 2:
                raise ValueError(f"routes[{i}]: a route is [address pattern, domain], got "
                                 f"{list(route)}")
        return routes


class UplinkConfig(BrokerConfig):
    """``[uplink]``: the cloud's broker, as a local CSMS reaches it across its site's uplink
    on one connection of its own (DESIGN.md section 5). It carries everything for the cloud
    (the ``[local]`` section's ``cloud`` address); the site's stations and resource manager
    stay on ``[broker]``. The account is the local CSMS's address on the cloud broker's
    ``domain``; ``password`` is its password there (absent: the same as on the site broker).
    """

    password: str | None = Field(None, repr=False)
    # an uplink is slow and shared: keep what waits in the kernel to a round trip's worth
    # (NETWORK-FACTS.md section 2 measured these against the alternatives)
    send_window_bytes: int | None = 24 * 1024
    notsent_lowat: int | None = 16 * 1024
    dead_after_s: float | None = 20.0  # a cut uplink is noticed within this, not in 15 min
    bulk_frame_bytes: int | None = 4 * 1024  # the frame a critical envelope may wait behind


class _Account(Settings):
    """Where an actor runs: its address (the account it logs in as), its password and the
    directory of its state."""

    address: Address
    password: str = Field("", repr=False)
    state_dir: str


class CloudConfig(CloudSettings, _Account):
    """``[cloud]``: a cloud CSMS."""

    address: Address = "cloud"
    state_dir: str = "state/cloud"
    operators: tuple[Address, ...] = ("operator",)


class LocalConfig(LocalSettings, _Account):
    """``[local]``: a site's local CSMS."""

    address: Address = "local-site1"
    state_dir: str = "state/local-site1"
    operators: tuple[Address, ...] = ("operator",)


class ResourceManagerConfig(ResourceManagerSettings, _Account):
    """``[resource_manager]``: a site's resource manager (operators change its profile live
    with ``csms set``)."""

    address: Address = "rm-site1"
    state_dir: str = "state/rm-site1"
    site_csms: Address | None = "local-site1"
    operators: tuple[Address, ...] = ("operator",)


class StationsConfig(StationSettings):
    """``[stations]``: a host of simulated stations on one component connection; each has its
    own address (``ids``) and tree (in ``state_dir``), the station settings here and the
    simulator's (``simulator``, or its keys directly); station ``i`` seeds its simulation
    with ``seed + i`` (default: from its address)."""

    component: str = "stations.csms.local"
    component_secret: str = Field("", repr=False)
    ids: tuple[str, ...] = ()
    csms: Address = "local-site1"
    state_dir: str = "state/stations"
    seed: int | None = None
    operators: tuple[Address, ...] = ("operator",)
    simulator: SimulatorSettings = SimulatorSettings()

    @field_validator("ids")
    @classmethod
    def _ids(cls, ids: tuple[str, ...]) -> tuple[str, ...]:
        addresses(ids)
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated[:5])} given more than once")
        return ids

    @property
    def role(self) -> Role:
        """The role of the CSMS the stations join."""
        return self.csms_role


class ChargerEntry(Settings):
    """One OCPP charger the gateway admits: the password it logs in with (security profile
    1 or 2: basic auth; none with client certificates, profile 3), its EVSEs, and whether it
    takes limits in amperes only and how many schedule periods (its ``SmartChargingCtrlr``)."""

    password: str | None = Field(None, repr=False, min_length=16, max_length=40)
    evse_count: int = Field(2, ge=1, le=16)
    amperes: bool = False
    max_periods: int = Field(24, ge=1, le=1024)
    onboarding: bool = True  # learn its device model (Pending boot) for each new firmware


class GatewayConfig(StationsConfig):
    """``[gateway]``: an OCPP 2.0.1 gateway, each charger of ``chargers`` (by identity: its
    station address too) a station actor on one component connection, served on
    ``ws://host:port/ocpp/<identity>`` (``wss://`` with ``certfile`` and ``keyfile``);
    firmware images are served on ``download_port`` (0: any free port), at URLs naming
    ``public_host``, the name the chargers reach it by (default ``host``)."""

    component: str = "gateway.csms.local"
    state_dir: str = "state/gateway"
    host: str = "127.0.0.1"
    public_host: str | None = None
    port: int = Field(9000, ge=0, le=65535)
    download_port: int = Field(0, ge=0, le=65535)
    certfile: str | None = None
    keyfile: str | None = None
    client_cafile: str | None = None
    ping_interval_s: float = 30.0
    connects_per_s: float = Field(50.0, gt=0)
    connect_burst: float = Field(100.0, ge=1)
    chargers: dict[str, ChargerEntry] = {}

    _ping = field_validator("ping_interval_s")(positive)

    @model_validator(mode="before")
    @classmethod
    def _chargers_are_the_stations(cls, data: Any) -> Any:
        if isinstance(data, dict):
            chargers = tuple(data.get("chargers") or ())
            if data.get("ids") and set(data["ids"]) != set(chargers):
                raise ValueError("a gateway's stations are its chargers: give `chargers`, "
                                 "not `ids`")
            data = {**data, "ids": chargers}
        return data

    @model_validator(mode="after")
    def _tls(self) -> GatewayConfig:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("TLS needs both `certfile` and `keyfile`")
        if self.client_cafile is not None and self.certfile is None:
            raise ValueError("client certificates (`client_cafile`) need TLS: give "
                             "`certfile` and `keyfile`")
        if self.client_cafile is None:
            lacking = sorted(i for i, c in self.chargers.items() if c.password is None)
            if lacking:
                raise ValueError(f"{', '.join(lacking[:5])}: a password, or client "
                                 "certificates (`client_cafile`)")
        return self


SHORT_FORMS: dict[str, dict[str, tuple[str, ...]]] = {
    "local": {"allocation_interval_s": ("energy", "interval_s")},
    "stations": {**{key: ("simulator", key) for key in ("evse_count", "dc", "speed", "tick_s")},
                 "arrivals_per_evse_per_h": ("simulator", "simulation",
                                             "arrivals_per_evse_hour")},
}
"""Keys a section of the file takes directly that belong deeper (``key``: where it goes)."""


class MetricsConfig(Settings):
    port: int = 0  # 0: no metrics
    host: str = "127.0.0.1"

    @field_validator("port")
    @classmethod
    def _port(cls, port: int) -> int:
        if not 0 <= port < 65536:
            raise ValueError(f"{port} is not a TCP port (0: no metrics)")
        return port


ENCRYPTED_KINDS = ("PropertyValueWrite", "Batch", "PropertyValueReadResponse",
                   "JoinNetworkRequest", "JoinNetworkResponse", "FirmwareUpdate")
"""What carries credentials, tariffs and secrets: encrypted by default when signing is on."""


class SigningConfig(Settings):
    """``[signing]``: envelopes signed end to end (``broker_bridge.session.signing``). Each
    actor of the process signs with its own key, kept in ``key_dir`` (made on first start);
    ``keys`` is the directory of the others: actor address -> Ed25519 public key (64 hex
    digits; until enrollment hands out certificates, the operator lists them). An actor in
    ``keys`` is never accepted unsigned; with ``require``, nobody is. The message kinds in
    ``encrypt`` are sealed to their receiver's X25519 key (``encryption_keys``, likewise)
    when it has one; with ``require``, those kinds are refused in clear.

    Certificates: ``anchor`` is the operator's root certificate (PEM); the directory then
    trusts every actor whose certificate leads to it, and learns the ``*.chain`` files in
    ``key_dir`` at start (the actor's own and those of its peers, written at commissioning:
    ``csms commission``). Stations without a certificate enroll at JoinNetwork with the
    one-time token in ``<key_dir>/<address>.token``; a local CSMS with ``site_ca`` (its site
    CA's directory) issues them certificates of ``certificate_days``."""

    key_dir: str = "state/keys"
    keys: dict[str, str] = {}
    encryption_keys: dict[str, str] = {}
    encrypt: tuple[str, ...] = ENCRYPTED_KINDS
    require: bool = False
    anchor: str | None = None
    site_ca: str | None = None
    certificate_days: float = Field(7.0, gt=0, le=397)

    @field_validator("keys", "encryption_keys")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        addresses(value)
        for address, key in value.items():
            if not re.fullmatch(r"[0-9a-fA-F]{64}", key):
                raise ValueError(f"{address}: a signing key is an Ed25519 public key as 64 "
                                 "hex digits")
        return value


class Config(Settings):
    broker: BrokerConfig = BrokerConfig()
    uplink: UplinkConfig | None = None
    cloud: CloudConfig | None = None
    local: LocalConfig | None = None
    stations: StationsConfig | None = None
    gateway: GatewayConfig | None = None
    resource_manager: ResourceManagerConfig | None = None
    metrics: MetricsConfig = MetricsConfig()
    signing: SigningConfig | None = None

    @model_validator(mode="after")
    def _uplink_of_a_site(self) -> Config:
        if self.uplink is not None and (self.local is None or self.local.cloud is None):
            raise ValueError("[uplink] is the link of a local CSMS to its cloud: it needs a "
                             "[local] section that names its `cloud`")
        return self


SECTIONS: dict[str, type[BaseModel]] = {
    "broker": BrokerConfig, "uplink": UplinkConfig, "cloud": CloudConfig, "local": LocalConfig,
    "stations": StationsConfig, "gateway": GatewayConfig,
    "resource_manager": ResourceManagerConfig,
    "metrics": MetricsConfig, "signing": SigningConfig}


def _fold(data: dict[str, Any], keys: dict[str, tuple[str, ...]]
          ) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    """Move the short forms ``keys`` of ``data`` to where they belong (``key`` ->
    ``data[a][b]``), unless the long form is given too (then the model refuses the short one
    as unknown); returns the data and the short forms it moved."""
    moved: dict[str, tuple[str, ...]] = {}
    if not any(key in data for key in keys):
        return data, moved
    data = dict(data)
    for key, where in keys.items():
        if key not in data:
            continue
        node = data
        for step in where[:-1]:
            inner = node.get(step, {})
            if not isinstance(inner, dict):
                break
            node[step] = node = dict(inner)
        else:
            if where[-1] not in node:
                node[where[-1]] = data.pop(key)
                moved[key] = where
    return data, moved


_TYPES = {"float": "float", "int": "int", "string": "str", "bool": "bool", "list": "a list",
          "tuple": "a list", "dict": "a table", "set": "a list", "frozen_set": "a list"}


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    for prefix, name in _TYPES.items():
        if kind.startswith(prefix + "_") or kind == prefix:
            value = error.get("input")
            return f"expected {name}, got {json.dumps(value)[:40]}"
    text = error["msg"]
    return text.removeprefix("Value error, ")


def _key(loc: tuple[int | str, ...], moved: dict[str, tuple[str, ...]]) -> str:
    """The key as the file names it (a moved short form by its short name)."""
    for short, where in moved.items():
        if loc[:len(where)] == where:
            loc = (short, *loc[len(where):])
    text = ""
    for step in loc:
        text += f"[{step}]" if isinstance(step, int) else f".{step}" if text else str(step)
    return text


def _problems(path: Path, section: str, exc: ValidationError,
              moved: dict[str, tuple[str, ...]]) -> str:
    where = f"{path} [{section}]"
    errors = exc.errors()
    unknown = [_key(e["loc"], moved) for e in errors if e["type"] == "extra_forbidden"]
    # the keys the section knows, when the unknown ones are the section's own
    known = ("; known: " + ", ".join(sorted(SECTIONS[section].model_fields))
             if any(len(e["loc"]) == 1 for e in errors if e["type"] == "extra_forbidden")
             else "")
    lines = [f"{where}: unknown key(s) {', '.join(unknown)}{known}"] if unknown else []
    for error in errors:
        if error["type"] == "extra_forbidden":
            continue
        key, message = _key(error["loc"], moved), _message(error)
        if message.startswith("expected "):  # the value is not of the key's type
            lines.append(f"{where}{'.' + key if key else ''}: {message}")
        else:  # the value breaks a rule of the key
            lines.append(f"{where}: {key + ': ' if key else ''}{message}")
    return "; ".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_table(name: str, data: dict[str, Any], out: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if v is not None and not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    out.append(f"[{name}]")
    out.extend(f"{_toml_key(key)} = {_toml_value(value)}" for key, value in scalars.items())
    out.append("")
    for key, table in tables.items():
        _toml_table(f"{name}.{_toml_key(key)}", table, out)


def render_config(config: Config) -> str:
    """``config`` as a deployment file that ``load_config`` reads back equal (the values
    that differ from the defaults; secrets included, so write it with mode 0600)."""
    out: list[str] = []
    for name in SECTIONS:
        part = getattr(config, name)
        if part is None:
            continue
        data = part.model_dump(mode="json", exclude_defaults=True)
        if data or name == "broker":
            _toml_table(name, data, out)
    return "\n".join(out)


def write_config(config: Config, path: Path) -> Path:
    """Write ``config`` to ``path`` (mode 0600: it holds passwords)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(render_config(config))
    return path


def load_config(path: Path | str) -> Config:
    """Read and check a TOML deployment file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) [{'], ['.join(unknown)}]; known: "
                          f"[{'], ['.join(SECTIONS)}]")
    parts: dict[str, BaseModel] = {}
    for name, section in raw.items():
        if not isinstance(section, dict):
            raise ConfigError(f"{path} [{name}]: expected a table")
        section, moved = _fold(section, SHORT_FORMS.get(name, {}))
        try:
            # as JSON, strictly: TOML's lists are tuples there, and nothing is coerced
            data = json.dumps(section)
            parts[name] = SECTIONS[name].model_validate_json(data, strict=True)
        except TypeError:  # a TOML date or time, which no key takes
            raise ConfigError(f"{path} [{name}]: holds a date or time value, which no key "
                              "takes") from None
        except ValidationError as exc:
            raise ConfigError(_problems(path, name, exc, moved)) from None
    try:
        return Config.model_validate(parts)
    except ValidationError as exc:  # a rule across sections
        raise ConfigError(f"{path}: " + "; ".join(_message(e) for e in exc.errors())) from None


__all__ = ["BrokerConfig", "CloudConfig", "Config", "ConfigError", "LocalConfig",
           "MetricsConfig", "ResourceManagerConfig", "StationsConfig", "UplinkConfig", "load_config",
           "render_config", "write_config"]
