"""``robot doctor`` against the device emulators: pings through the real drivers, exit status."""

from __future__ import annotations

from robot.cli import main


def test_doctor_passes_on_emulators(capsys):
    assert main(["doctor", "--emulate", "--loop-seconds", "0.05"]) == 0
    out = capsys.readouterr().out
    for name in ("XM430-W350", "XL330-M288", "STS3215", "robotiq status", "160x120", "control loop"):
        assert name in out


def test_doctor_fails_on_a_missing_device(capsys):
    # Nothing listens on the discard port: the required ping fails, so the exit status is 1.
    assert main(["doctor", "--dynamixel", "socket://127.0.0.1:9:1", "--loop-seconds", "0.05"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_doctor_rejects_a_malformed_bus(capsys):
    assert main(["doctor", "--feetech", "/dev/ttyUSB0:x"]) == 2
    assert "PORT@BAUD:IDS" in capsys.readouterr().err
