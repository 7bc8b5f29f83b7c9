"""The choice between the local backend and testcontainers, without Docker."""

from __future__ import annotations

import socket

import pytest

from tests.backends import docker_reachable, select_backend


def test_local_is_the_default():
    choice = select_backend({}, docker_ok=True)
    assert (choice.postgres, choice.kafka) == ("local", "embedded")


def test_containers_when_asked_and_docker_answers():
    choice = select_backend({"TEST_BACKEND": "containers"}, docker_ok=True)
    assert (choice.postgres, choice.kafka) == ("containers", "containers")


def test_containers_asked_without_docker_falls_back_and_says_so():
    choice = select_backend({"TEST_BACKEND": "containers"}, docker_ok=False)
    assert (choice.postgres, choice.kafka) == ("local", "embedded")
    assert "no Docker engine" in choice.note


def test_explicit_addresses_win():
    env = {"TEST_BACKEND": "containers", "TEST_DATABASE_URL": "postgresql://x/y", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"}
    choice = select_backend(env, docker_ok=True)
    assert (choice.postgres, choice.kafka) == ("env", "env")


def test_an_unknown_backend_is_named():
    with pytest.raises(ValueError, match="TEST_BACKEND"):
        select_backend({"TEST_BACKEND": "docker"}, docker_ok=True)


def test_no_engine_at_docker_host(tmp_path):
    assert docker_reachable({"DOCKER_HOST": f"unix://{tmp_path}/missing.sock"}) is False
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert docker_reachable({"DOCKER_HOST": f"tcp://127.0.0.1:{port}"}, timeout=0.5) is False


def test_a_unix_socket_that_answers_ping_counts(tmp_path):
    import threading

    path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def answer():
        conn, _ = server.accept()
        conn.recv(1024)
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nOK")
        conn.close()

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        assert docker_reachable({"DOCKER_HOST": f"unix://{path}"}) is True
    finally:
        thread.join(timeout=5)
        server.close()
