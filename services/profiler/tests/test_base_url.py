"""The OpenAI endpoint allow-list reads a URL as the HTTP client does: the host checked is the host
connected to (httpx's parser, the OpenAI client's transport)."""

from __future__ import annotations

import httpx
import pytest
from skillprofiler.config import RefusedReference, Settings

ALLOWED = ["http://127.0.0.1", "http://localhost", "http://[::1]", "https://models.example.org:8443/v1"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1",
        "http://localhost:9000/v1/",
        "http://LOCALHOST:8000/v1",
        "http://[::1]:8000/v1",
        "http://[0:0::1]:8000/v1",  # the same IPv6 address, written longer
        "https://models.example.org:8443/v1/chat",
    ],
)
def test_allowed_servers_pass(url: str) -> None:
    assert Settings(allowed_base_urls=ALLOWED).check_base_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:80@example.com/v1", "user info"),
        ("http://localhost:x@example.com/v1", "user info"),
        ("http://user@127.0.0.1:8000/v1", "user info"),
        ("http://2130706433:8000/v1", "not a canonical IP"),  # decimal 127.0.0.1
        ("http://0x7f000001/v1", "not a canonical IP"),
        ("http://0x7f.1/v1", "not a canonical IP"),
        ("http://127.1/v1", "not a canonical IP"),
        ("http://0177.0.0.1/v1", "not a valid URL"),  # octal: httpx itself refuses it
        ("http://localhost.evil.com/v1", "not an allowed server"),
        ("http://127.0.0.1.nip.io/v1", "not an allowed server"),
        ("http://[::2]:8000/v1", "not an allowed server"),
        ("https://127.0.0.1:8000/v1", "not an allowed server"),  # another scheme than the entry's
        ("https://models.example.org/v1", "not an allowed server"),  # the entry names its port
        ("https://models.example.org:8443/v2", "not an allowed server"),  # outside the entry's path
        ("https://models.example.org:8443/v10", "not an allowed server"),
        ("ftp://127.0.0.1/", "http:// or https://"),
        ("not a url", "http:// or https://"),
    ],
)
def test_refused_urls(url: str, message: str) -> None:
    with pytest.raises(RefusedReference, match=message):
        Settings(allowed_base_urls=ALLOWED).check_base_url(url)


def test_the_refused_userinfo_urls_do_go_elsewhere() -> None:
    """Why they are refused: the client's own parser sends them to example.com."""
    assert httpx.URL("http://127.0.0.1:80@example.com/v1").host == "example.com"
    assert httpx.URL("http://localhost:x@example.com/v1").host == "example.com"
