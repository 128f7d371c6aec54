"""The simulated charger over TLS: wss:// to its CSMS and https:// for its firmware, both
checked with the ``ssl_context`` it was given."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from ocpp.v201 import call

from actors.testing import FakeClock
from broker_bridge.pki import CertificateAuthority
from tests.actors.testing.ocpp_charger.conftest import charger_of, running
from tests.actors.testing.ocpp_charger.csms import Csms

IMAGE = b"FW:3.0.0-tls\nimage"


class _Image(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(IMAGE)))
        self.end_headers()
        self.wfile.write(IMAGE)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server's context (a certificate for 127.0.0.1 of a CA of the test's) and a client's
    trusting that CA only."""
    ca = CertificateAuthority(tmp_path / "ca")
    issued = ca.issue_server(tmp_path / "server", "csms", ["localhost"], ["127.0.0.1"])
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(issued.certificate, issued.key)
    return server, ssl.create_default_context(cafile=str(ca.certificate_path))


@pytest.fixture
def https(contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Image)
    server.socket = contexts[0].wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/fw.bin"
    server.shutdown()
    server.server_close()
    thread.join()


async def test_over_wss_it_reports_profile_2_and_fetches_https_images(
        contexts: tuple[ssl.SSLContext, ssl.SSLContext], https: str, clock: FakeClock
        ) -> None:
    async with Csms(tls=contexts[0]) as csms, running(charger_of(
            csms, clock, plugged=0, ssl_context=contexts[1])) as charger:
        assert csms.url.startswith("wss://")
        await csms.wait_call("StatusNotification", 2)
        answer = await csms.call(call.GetVariables(get_variable_data=[
            {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "SecurityProfile"}}]))
        assert answer.get_variable_result[0]["attribute_value"] == "2"
        await csms.call(call.UpdateFirmware(request_id=3, firmware={
            "location": https, "retrieve_date_time": datetime.fromtimestamp(
                clock.now_us() / 1e6, tz=UTC).isoformat()}))
        await csms.wait_call("FirmwareStatusNotification", status="Installed")
        assert charger.firmware_version == "3.0.0-tls"
    assert csms.violations == []
