"""Deployment files: the documented examples load; mistakes are named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.app.config import ConfigError, load_config
from actors.app.wiring import xmpp_settings
from object_model import Role

EXAMPLES = Path(__file__).resolve().parents[3] / "deploy" / "examples"


def test_the_documented_examples_load() -> None:
    cloud = load_config(EXAMPLES / "cloud.toml")
    assert cloud.cloud is not None and cloud.cloud.site_secrets == {
        "local-site1": "site1-upstream-secret"}
    assert cloud.broker.routes == (("cs-site1-*", "site1.stations.csms.example"),)
    local = load_config(EXAMPLES / "local.toml")
    assert local.local is not None and local.local.cloud == "cloud"
    stations = load_config(EXAMPLES / "stations.toml")
    assert stations.stations is not None and stations.stations.role is Role.LOCAL_CSMS
    assert stations.stations.ids == ("cs-site1-1", "cs-site1-2", "cs-site1-3")
    cluster = load_config(EXAMPLES / "cloud-cluster.toml")
    assert cluster.cloud is not None
    settings = xmpp_settings(cluster.broker)
    assert settings.servers == (("127.0.0.1", 5222, 5347), ("127.0.0.1", 5223, 5348))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[local]\naddres = 'x'\n", "unknown key(s) addres"),
        ("[clowd]\n", "unknown section(s) [clowd]"),
        ("[stations]\nspeed = 'fast'\n", "[stations].speed: expected float"),
        ("[stations]\nids = 'cs-1'\n", "[stations].ids: expected a list"),
        ("[broker]\nc2s_port = 5222.5\n", "[broker].c2s_port: expected int"),
        ("[local\n", "not valid TOML"),
        ("[broker]\nroutes = [['cs-*']]\n", "routes[0]: a route is [address pattern, domain]"),
        ("[broker]\ncomponent_port = 70000\n", "component_port: 70000 is not a TCP port"),
        ("[broker]\nalternates = [['127.0.0.1', 5223, 0]]\n",
         "alternates[0]: 0 is not a TCP port"),
        ("[broker]\nalternates = [['127.0.0.1', '5223', 5348]]\n",
         "[broker].alternates[0][1]: expected int"),
        ("[stations]\nids = ['cs-1', 'cs-2', 'cs-1']\n", "ids: cs-1 given more than once"),
        ("[stations]\nids = ['cs 1']\n", "ids: 'cs 1' is not an actor address"),
        ("[stations]\nspeed = 0\n", "speed: must be more than 0"),
        ("[stations]\ntick_s = -1\n", "tick_s: must be more than 0"),
        ("[stations]\ncsms_role = 'station'\n", "csms_role: 'station' is not local_csms"),
        ("[cloud]\n[cloud.site_secrets]\n'site/1' = 'x'\n", "site_secrets: 'site/1'"),
    ],
)
def test_mistakes_name_the_file_section_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nowhere.toml")


def test_a_section_is_the_settings_its_actor_is_given(tmp_path: Path) -> None:
    from actors.csms.settings import LocalSettings
    from actors.station.actor import StationSettings

    path = tmp_path / "site.toml"
    path.write_text("[local]\nallocation_interval_s = 5\nfallback_limit_w = 40000\n"
                    "operators = ['op-1']\n[local.energy.allocator]\nhorizon_s = 7200\n"
                    "[stations]\nids = ['cs-1']\nspeed = 60\narrivals_per_evse_per_h = 2\n"
                    "[stations.tasks]\ninstall_s = 0.5\n")
    config = load_config(path)
    local, stations = config.local, config.stations
    assert isinstance(local, LocalSettings) and isinstance(stations, StationSettings)
    assert local.energy.interval_s == 5.0  # the short form of energy.interval_s
    assert local.energy.allocator.horizon_s == 7200.0 and local.fallback_limit_w == 40000.0
    assert stations.simulator.speed == 60.0
    assert stations.simulator.simulation.arrivals_per_evse_hour == 2.0
    assert stations.tasks.install_s == 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[local.energy]\ninterval_s = 0\n", "[local]: energy.interval_s: must be more than 0"),
        ("[local]\nallocation_interval_s = -1\n",
         "[local]: allocation_interval_s: must be more than 0"),
        ("[local]\nallocation_interval_s = 5\n[local.energy]\ninterval_s = 3\n",
         "unknown key(s) allocation_interval_s"),
        ("[local]\ncloud = 'the cloud'\n", "[local]: cloud: 'the cloud' is not an actor address"),
        ("[stations]\nevse_count = 17\n", "[stations]: evse_count: must be 1 to 16, got 17"),
        ("[stations]\ndc = 1\n", "[stations].dc: expected bool"),
        ("[resource_manager]\nfuse_limit_w = 0\n", "fuse_limit_w: must be more than 0"),
        ("[stations]\nids = ['cs-1']\nborn = 2024-01-01\n", "[stations]"),
    ],
)
def test_mistakes_deeper_in_a_section_are_named_by_the_files_key(
        tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value) and str(path) in str(info.value)
