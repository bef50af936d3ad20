"""Tests for system.py: each check answers from what the system has, and the sync
functions take the path each system needs (the other systems' paths are simulated here
by taking a name away or putting one in)."""

import os

import pytest

import system


def test_cpu_count_prefers_the_process_count_of_python_3_13(monkeypatch):
    monkeypatch.setattr(os, "process_cpu_count", lambda: 3, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4}, raising=False)
    assert system.cpu_count() == 3


def test_cpu_count_uses_the_affinity_mask_where_there_is_no_process_count(monkeypatch):
    monkeypatch.delattr(os, "process_cpu_count", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert system.cpu_count() == 2


def test_cpu_count_falls_back_to_every_core_on_macos_and_windows_before_3_13(monkeypatch):
    monkeypatch.delattr(os, "process_cpu_count", raising=False)
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert system.cpu_count() == 8
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # "cannot tell": one
    assert system.cpu_count() == 1


class FakeFcntl:
    """macOS's fcntl, as far as sync_file uses it: records each command, or refuses it."""

    def __init__(self, refuse: bool = False):
        self.commands, self.refuse = [], refuse

    def fcntl(self, descriptor, command, arg=0):
        self.commands.append(command)
        if self.refuse:
            raise OSError(45, "Operation not supported")  # ENOTSUP on macOS: e.g. a FAT volume
        return 0


@pytest.fixture
def fsyncs(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "fsync", lambda descriptor: calls.append(descriptor))
    return calls


def test_sync_file_is_fsync_where_there_is_no_f_fullfsync(monkeypatch, fsyncs):
    monkeypatch.setattr(system, "FULL_FSYNC", None)
    system.sync_file(7)
    assert fsyncs == [7]


def test_sync_file_uses_f_fullfsync_on_macos_and_no_fsync_besides(monkeypatch, fsyncs):
    macos = FakeFcntl()
    monkeypatch.setattr(system, "fcntl", macos)
    monkeypatch.setattr(system, "FULL_FSYNC", 51)
    system.sync_file(7)
    assert (macos.commands, fsyncs) == ([51], [])


def test_sync_file_falls_back_to_fsync_where_f_fullfsync_is_refused(monkeypatch, fsyncs):
    macos = FakeFcntl(refuse=True)
    monkeypatch.setattr(system, "fcntl", macos)
    monkeypatch.setattr(system, "FULL_FSYNC", 51)
    system.sync_file(7)
    assert (macos.commands, fsyncs) == ([51], [7])


@pytest.mark.skipif(not system.CAN_SYNC_DIRECTORY, reason="a directory cannot be opened here (Windows)")
def test_sync_directory_syncs_the_directory_where_it_can_be_opened(tmp_path, monkeypatch, fsyncs):
    monkeypatch.setattr(system, "FULL_FSYNC", None)
    system.sync_directory(tmp_path)
    assert len(fsyncs) == 1


def test_sync_directory_opens_nothing_where_a_directory_cannot_be_opened(tmp_path, monkeypatch, fsyncs):
    monkeypatch.setattr(system, "CAN_SYNC_DIRECTORY", False)  # Windows
    monkeypatch.setattr(os, "open", lambda *args, **kwargs: pytest.fail("opened a directory"))
    system.sync_directory(tmp_path)
    assert fsyncs == []


@pytest.mark.skipif(not system.CAN_SYNC_DIRECTORY, reason="a directory cannot be opened here (Windows)")
def test_sync_directory_refuses_a_file(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        system.sync_directory(tmp_path / "file")
