"""What a local and a cloud CSMS are told: their settings, as the deployment file's
``[local]`` and ``[cloud]`` sections give them (``actors.app.config`` adds the account and
state directory) or as a test makes them."""

from __future__ import annotations

from pydantic import Field, field_validator

from actors.logic.energy.allocation import AllocatorSettings
from actors.runtime.actor import RoleDirectory
from actors.runtime.settings import Address, Settings, addresses, positive
from object_model import Role


class CsmsSettings(Settings):
    """What every CSMS is told: how often stations say they live (``heartbeat_s``) and
    when one counts as offline, how many copies it resynchronises at once, how often it
    publishes its own tree's changes and copies its counters in; ``operators`` are the
    addresses with the operator role."""

    heartbeat_s: float = 30.0
    offline_after_s: float = 95.0
    resync_concurrency: int = Field(256, ge=1)
    publish_interval_s: float = 0.25
    counters_every_s: float = 10.0
    operators: tuple[Address, ...] = ()

    _positive = field_validator("heartbeat_s", "offline_after_s", "publish_interval_s",
                                "counters_every_s")(positive)

    def roles(self, known: RoleDirectory | None = None) -> RoleDirectory:
        """Who plays which role for the CSMS from the start (admission adds the rest):
        ``known`` (a new directory if none) with the operators added."""
        roles = known or RoleDirectory()
        for operator in self.operators:
            roles.add(operator, Role.OPERATOR)
        return roles


class EnergySettings(Settings):
    """How often a site is allocated (``interval_s``, and at once when an input changes),
    when a higher limit is worth a message, how long a station may take to take its
    envelope, and which band of the PV forecast the site limit trusts (0: expected value)."""

    enabled: bool = True
    interval_s: float = 3.0
    min_raise_w: float = 200.0  # a higher upper limit smaller than this waits
    write_timeout_s: float = 5.0
    pv_band: int = Field(95, ge=0, le=95)
    allocator: AllocatorSettings = AllocatorSettings()

    _positive = field_validator("interval_s", "write_timeout_s")(positive)


class LocalSettings(CsmsSettings):
    """A site's local CSMS: its name, the secret its stations present, its cloud and the
    secret it presents there, its resource manager, and the site's energy management
    (``fallback_limit_w``: the site's limit while no resource manager gives one; set into
    a new own tree, operators change it live)."""

    site: str = "site1"
    provisioning_secret: str = Field("", repr=False)
    cloud: Address | None = None
    upstream_secret: str = Field("", repr=False)
    policy_check_s: float = 30.0
    resource_manager: Address | None = None
    fallback_limit_w: float = 0.0
    energy: EnergySettings = EnergySettings()

    _positive_check = field_validator("policy_check_s")(positive)

    @field_validator("fallback_limit_w")
    @classmethod
    def _limit(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"must be 0 or more, got {value}")
        return value


class CloudSettings(CsmsSettings):
    """Secrets: one per site (its local CSMS presents it), and one for direct stations.

    ``join_rate_per_s`` and ``join_burst`` bound a reconnect storm: joins are admitted as
    a token bucket allows, each costing 1 plus 1 per copy it makes the cloud resynchronise
    (``actors.runtime.services.admission``); the rest are told to come back later (``BUSY``).
    ``None`` admits every join at once. The default is about what one core resynchronises per
    second (``csms bench scale``: 1.7 ms of cloud CPU per changed station after a broker
    restart), so a storm is admitted about as fast as the cloud can catch up with it."""

    site_secrets: dict[str, str] = Field(default_factory=dict, repr=False)
    station_secret: str = Field("", repr=False)
    join_rate_per_s: float | None = Field(500.0, gt=0)
    join_burst: float = Field(1000.0, ge=1)

    @field_validator("site_secrets")
    @classmethod
    def _sites(cls, value: dict[str, str]) -> dict[str, str]:
        addresses(value)
        return value


__all__ = ["CloudSettings", "CsmsSettings", "EnergySettings", "LocalSettings"]
