"""Energy-meter arithmetic on constructed sysfs trees: RAPL wrap-around, hwmon, INA3221, command.

These machines have no energy sensors, so each test builds the files a kernel would show
(tests run as root, where permission bits do not stop reads: an unreadable sensor is a
directory where the value file should be, which fails with EISDIR like EACCES would).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from dnsrec_edge.bench import energy as E
from dnsrec_edge.board import probe
from dnsrec_edge.errors import DeviceError


def write(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


def rapl_tree(root: Path, package_uj: int, core_uj: int, max_range: int = 1_000_000) -> Path:
    zone = root / "sys/class/powercap/intel-rapl:0"
    write(zone / "name", "package-0")
    write(zone / "energy_uj", package_uj)
    write(zone / "max_energy_range_uj", max_range)
    sub = root / "sys/class/powercap/intel-rapl:0:0"
    write(sub / "name", "core")
    write(sub / "energy_uj", core_uj)
    write(sub / "max_energy_range_uj", max_range)
    return zone


def make_unreadable(path: Path) -> None:
    path.unlink()
    path.mkdir()


# --- arithmetic -------------------------------------------------------------------------------


def test_counter_delta_handles_one_wrap_and_refuses_unknown_resets():
    assert E.counter_delta(100, 350, 1000) == 250
    assert E.counter_delta(900, 100, 1000) == 200  # wrapped at max_energy_range_uj
    assert E.counter_delta(900, 100, None) is None  # went down with no range: a reset


def test_integrate_is_the_trapezoid_rule():
    assert E.integrate([0.0, 1.0, 3.0], [2.0, 4.0, 4.0]) == pytest.approx(3.0 + 8.0)
    assert E.integrate([5.0], [9.0]) == 0.0


def test_net_joules_subtracts_idle_power_over_the_window():
    reading = E.EnergyReading(joules=10.0, seconds=2.0, source="rapl")
    assert E.net_joules(reading, idle_watts=3.0) == pytest.approx(4.0)
    assert reading.watts == pytest.approx(5.0)


# --- RAPL -----------------------------------------------------------------------------------


def test_rapl_sums_package_and_unwraps_the_counter(tmp_path):
    zone = rapl_tree(tmp_path, package_uj=900_000, core_uj=10_000)
    meter, note = E.make_meter("rapl", E.LocalProbe(str(tmp_path)), power=None)
    assert isinstance(meter, E.RaplMeter) and note == ""
    meter.start()
    write(zone / "energy_uj", 100_000)  # wrapped past max_energy_range_uj = 1e6
    write(tmp_path / "sys/class/powercap/intel-rapl:0:0/energy_uj", 60_000)
    reading = meter.stop()
    assert reading.source == "rapl"
    assert reading.joules == pytest.approx(0.2)  # package only: core is inside the package
    assert reading.detail == {"package-0": pytest.approx(0.2), "core": pytest.approx(0.05)}
    assert reading.seconds >= 0


def test_rapl_two_sockets_are_summed(tmp_path):
    rapl_tree(tmp_path, 0, 0)
    second = tmp_path / "sys/class/powercap/intel-rapl:1"
    write(second / "name", "package-1")
    write(second / "energy_uj", 5_000)
    write(second / "max_energy_range_uj", 1_000_000)
    meter, _ = E.make_meter("auto", E.LocalProbe(str(tmp_path)), power=None)
    meter.start()
    write(tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj", 1_000)
    write(second / "energy_uj", 8_000)
    assert meter.stop().joules == pytest.approx(0.004)


def test_unreadable_rapl_is_reported_and_auto_falls_back(tmp_path):
    zone = rapl_tree(tmp_path, 1, 1)
    make_unreadable(zone / "energy_uj")
    make_unreadable(tmp_path / "sys/class/powercap/intel-rapl:0:0/energy_uj")
    found = probe.discover(str(tmp_path))
    assert [z["readable"] for z in found["rapl"]] == [False, False]
    assert "Is a directory" in found["rapl"][0]["error"]
    with pytest.raises(DeviceError, match=r"rapl sensors: not readable .*chmod a\+r"):
        E.make_meter("rapl", E.LocalProbe(str(tmp_path)), power=None)
    meter, note = E.make_meter("auto", E.LocalProbe(str(tmp_path)), power=(2.0, 6.0))
    assert isinstance(meter, E.ModelMeter) and "not readable" in note


def test_sensor_that_vanishes_mid_window_fails_naming_it(tmp_path):
    zone = rapl_tree(tmp_path, 1, 1)
    meter, _ = E.make_meter("rapl", E.LocalProbe(str(tmp_path)), power=None)
    meter.start()
    (zone / "energy_uj").unlink()
    with pytest.raises(DeviceError, match="rapl sensor package-0 became unreadable"):
        meter.stop()


def test_missing_sensors_auto_models_and_explicit_source_fails(tmp_path):
    local = E.LocalProbe(str(tmp_path))  # an empty tree: no powercap, no hwmon
    meter, note = E.make_meter("auto", local, power=(2.0, 6.0), where="the board at b:1")
    assert isinstance(meter, E.ModelMeter) and meter.source == "model"
    assert note == "the board at b:1 has no energy sensors"
    assert E.make_meter("auto", local, power=None) == (None, "the board has no energy sensors")
    with pytest.raises(DeviceError, match="has no hwmon sensors; pick another source"):
        E.make_meter("hwmon", local, power=None)


# --- hwmon ------------------------------------------------------------------------------------


def test_hwmon_energy_counter_and_reset(tmp_path):
    chip = tmp_path / "sys/class/hwmon/hwmon3"
    write(chip / "name", "amd_energy")
    write(chip / "energy1_input", 2_000_000)
    write(chip / "energy1_label", "Esocket0")
    meter, _ = E.make_meter("hwmon", E.LocalProbe(str(tmp_path)), power=None)
    assert isinstance(meter, E.HwmonEnergyMeter)
    meter.start()
    write(chip / "energy1_input", 3_500_000)
    reading = meter.stop()
    assert (reading.source, reading.joules) == ("hwmon", pytest.approx(1.5))
    meter.start()
    write(chip / "energy1_input", 10)  # a counter with no range that went down: a reset
    with pytest.raises(DeviceError, match="went backwards"):
        meter.stop()


def test_hwmon_power_is_sampled_and_integrated(tmp_path):
    chip = tmp_path / "sys/class/hwmon/hwmon0"
    write(chip / "name", "zenpower")
    write(chip / "power1_input", 5_000_000)  # 5 W in µW
    write(chip / "power1_label", "SoC")
    meter, _ = E.make_meter("hwmon:SoC", E.LocalProbe(str(tmp_path)), power=None)
    assert isinstance(meter, E.HwmonPowerMeter)
    meter.start()
    time.sleep(0.15)
    reading = meter.stop()
    assert reading.detail["samples"] >= 2
    assert reading.seconds > 0.1
    assert reading.joules == pytest.approx(5.0 * reading.seconds)
    with pytest.raises(DeviceError, match=r"no sensor named 'PPT' \(found: SoC\)"):
        E.make_meter("hwmon:PPT", E.LocalProbe(str(tmp_path)), power=None)


def test_idle_baseline_from_a_power_sensor(tmp_path):
    chip = tmp_path / "sys/class/hwmon/hwmon0"
    write(chip / "name", "board")
    write(chip / "power1_input", 2_000_000)
    meter, _ = E.make_meter("hwmon", E.LocalProbe(str(tmp_path)), power=None)
    idle = E.measure_idle(meter, 0.1)
    assert idle == pytest.approx(2.0)
    write(chip / "power1_input", 7_000_000)
    meter.start()
    time.sleep(0.1)
    reading = meter.stop()
    assert E.net_joules(reading, idle) == pytest.approx(5.0 * reading.seconds)


# --- Jetson INA3221 ----------------------------------------------------------------------------


def test_ina3221_hwmon_rails_use_the_board_input_rail(tmp_path):
    chip = tmp_path / "sys/class/hwmon/hwmon1"
    write(chip / "name", "ina3221")
    for ch, rail, mv, ma in ((1, "VDD_IN", 5000, 1200), (2, "VDD_CPU_GPU_CV", 5000, 400)):
        write(chip / f"in{ch}_label", rail)
        write(chip / f"in{ch}_input", mv)
        write(chip / f"curr{ch}_input", ma)
    meter, _ = E.make_meter("auto", E.LocalProbe(str(tmp_path)), power=None)
    assert isinstance(meter, E.Ina3221Meter)
    meter.start()
    time.sleep(0.1)
    reading = meter.stop()
    assert reading.source == "ina3221"
    assert reading.joules == pytest.approx(6.0 * reading.seconds)  # VDD_IN only: 5 V x 1.2 A
    assert reading.detail["VDD_CPU_GPU_CV"] == pytest.approx(2.0 * reading.seconds)


def test_ina3221_iio_rails_in_milliwatts_are_summed_without_an_input_rail(tmp_path):
    dev = tmp_path / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for ch, rail, mw in ((0, "VDD_SYS_GPU", 1500), (1, "VDD_SYS_SOC", 500)):
        write(dev / f"rail_name_{ch}", rail)
        write(dev / f"in_power{ch}_input", mw)
    meter, _ = E.make_meter("ina3221", E.LocalProbe(str(tmp_path)), power=None)
    meter.start()
    time.sleep(0.1)
    reading = meter.stop()
    assert reading.joules == pytest.approx(2.0 * reading.seconds)


# --- command and model ---------------------------------------------------------------------------


def test_command_meter_reads_a_joules_total():
    meter, _ = E.make_meter("command:echo 12.5 J", None, None)
    meter.start()
    time.sleep(0.2)
    reading = meter.stop()
    assert (reading.source, reading.joules) == ("command", 12.5)


def test_command_meter_averages_watt_samples_until_interrupted():
    meter = E.CommandMeter("sh -c 'while :; do echo 3.0 W; sleep 0.02; done'")
    meter.start()
    time.sleep(0.3)
    reading = meter.stop()
    assert reading.detail["watt_samples"] >= 1
    assert reading.joules == pytest.approx(3.0 * reading.seconds)


def test_command_meter_errors_are_one_sentence():
    with pytest.raises(DeviceError, match="printed no '<number> J'"):
        E.parse_meter_output("hello\nworld\n", 1.0)
    meter = E.CommandMeter("/nonexistent/meter --joules")
    with pytest.raises(DeviceError, match="cannot start energy command"):
        meter.start()
    with pytest.raises(DeviceError, match="needs a command"):
        E.make_meter("command:", None, None)


def test_model_is_prior_times_latency_and_labelled():
    meter, _ = E.make_meter("model", None, power=(2.5, 6.5))
    assert meter.source == "model"
    assert meter.joules_per_inference(0.010) == pytest.approx(0.065)
    assert meter.joules_per_inference(0.010, net=True) == pytest.approx(0.040)
    assert E.make_meter("model", None, power=None) == (
        None,
        "the target has no power priors to model energy from",
    )


def test_bad_specs_and_boards_without_agent():
    with pytest.raises(DeviceError, match="unknown --energy 'joulemeter'"):
        E.make_meter("joulemeter", None, None)
    meter, note = E.make_meter("auto", None, power=(1.0, 2.0), where="the board at h:1")
    assert isinstance(meter, E.ModelMeter) and "runs no dnsrec-edge agent" in note
    with pytest.raises(DeviceError, match="dnsrec-edge device serve"):
        E.make_meter("rapl", None, power=None)


@pytest.mark.skipif(shutil.which("true") is None, reason="needs coreutils")
def test_command_meter_without_output_fails():
    meter = E.CommandMeter("true")
    meter.start()
    with pytest.raises(DeviceError, match="printed no"):
        meter.stop()
