"""The web server's settings as Faust receives them (no services needed)."""

from __future__ import annotations

from stream_app.settings import Settings
from stream_app.worker import faust_app


def test_the_web_server_binds_loopback_unless_configured() -> None:
    conf = faust_app(Settings.from_env({})).conf
    assert conf.web_bind == "127.0.0.1"
    assert conf.web_host == "127.0.0.1"


def test_churn_web_bind_is_the_address_faust_listens_on_and_advertises() -> None:
    conf = faust_app(Settings.from_env({"CHURN_WEB_BIND": "10.1.2.3"})).conf
    assert (conf.web_bind, conf.web_host) == ("10.1.2.3", "10.1.2.3")


def test_faust_s_own_pages_are_not_served() -> None:
    conf = faust_app(Settings.from_env({})).conf
    assert not conf.web_router_enabled  # /router: who owns which key
    assert not conf.web_tables_enabled  # /table: table contents
    assert not conf.web_stats_enabled  # /: sensor statistics, assignments
    assert not conf.web_graph_enabled  # /graph
