"""SSRF: webhook URLs that resolve to anything but public addresses are refused (no connection made)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from service.settings import Settings
from service.webhooks import UnsafeWebhookURL, check_webhook_url, resolve_webhook_url
from service.webhooks.ssrf import _refusal as refusal

STRICT = Settings(webhook_allowed_hosts="")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://127.1/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://172.31.255.254:8080/",
        "https://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",  # ::ffff:169.254.169.254
        "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
        "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
        "http://[64:ff9b:1::5db8:d822]/",  # local-use NAT64
        "http://[2002:7f00:1::1]/",  # 6to4 of 127.0.0.1
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[ff02::1]/",
        "http://2130706433/",  # decimal 127.0.0.1
        "http://0177.0.0.1/",  # octal
        "http://0x7f000001/",  # hex
        "http://0x7f.1/",
        "http://localhost:8000/",
        "http://LOCALHOST/",
        "http://100.64.0.1/",  # CGNAT
        "http://0.0.0.0/",
        "http://224.0.0.1/",  # multicast
        "http://240.0.0.1/",  # reserved
        "http://255.255.255.255/",
        "http://user:pass@127.0.0.1/",
        "ftp://93.184.216.34/",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
        "93.184.216.34/hook",  # no scheme
        "http:///hook",  # no host
        "http://93.184.216.34:99999/",  # bad port
    ],
)
def test_unsafe_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeWebhookURL):
        check_webhook_url(url, STRICT)


def test_refusal_explains_itself() -> None:
    with pytest.raises(UnsafeWebhookURL, match=r"resolves to 127\.0\.0\.1.*loopback.*ALLOWED_HOSTS"):
        check_webhook_url("http://0177.0.0.1/", STRICT)
    with pytest.raises(UnsafeWebhookURL, match="http or https"):
        check_webhook_url("ftp://example.com/", STRICT)


def test_unresolvable_host_is_refused() -> None:
    with pytest.raises(UnsafeWebhookURL, match="does not resolve"):
        check_webhook_url("https://no-such-host.invalid/hook", STRICT)


def test_any_private_address_among_several_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name with one public and one private address (a rebinding setup) is refused."""

    def fake_getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(UnsafeWebhookURL, match="10.0.0.7"):
        check_webhook_url("https://hooks.example.com/x", STRICT)


def test_public_literals_pass_without_connecting() -> None:
    check_webhook_url("http://93.184.216.34/hook", STRICT)
    check_webhook_url("https://[2606:2800:220:1:248:1893:25c8:1946]:8443/hook", STRICT)
    target = resolve_webhook_url("https://93.184.216.34/hook", STRICT)
    assert (target.host, target.port, target.address) == ("93.184.216.34", 443, "93.184.216.34")


def test_allowlisted_host_passes_exact_match_only() -> None:
    settings = Settings(webhook_allowed_hosts=" 127.0.0.1 , receiver.local")
    check_webhook_url("http://127.0.0.1:9/hook", settings)
    with pytest.raises(UnsafeWebhookURL):
        check_webhook_url("http://127.0.0.2/", settings)
    with pytest.raises(UnsafeWebhookURL):
        check_webhook_url("http://2130706433/", settings)  # the same address, another host string
    with pytest.raises(UnsafeWebhookURL):
        check_webhook_url("http://localhost/", settings)


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("64:ff9b::5db8:d822", False),  # NAT64 of a public address
        ("::ffff:93.184.216.34", False),
        ("2002:5db8:d822::1", False),  # 6to4 of a public address
        ("2002:a00:1::1", True),  # 6to4 of 10.0.0.1
        ("198.18.0.1", True),  # benchmarking
        ("192.0.2.1", True),  # documentation
        ("8.8.8.8", False),
    ],
)
def test_embedded_ipv4_addresses_are_judged_by_their_ipv4(address: str, refused: bool) -> None:
    assert (refusal(ipaddress.ip_address(address)) is not None) is refused
