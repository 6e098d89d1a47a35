"""The digital twin: a surrogate file behind the simulated board's DAC/ADC (sim://?device=surrogate).

The board measures what the core's evaluation of the file predicts (to one ADC code, noise off),
adopts the file's electrode ranges as its limits and its output range as its TIA range (the ADC
scale follows), and adds the file's noise floor, seeded by the board seed."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import core
from core.electrodes import N_ELECTRODES
from firmware_sim.board import BoardConfig, Firmware, adc_span_for
from firmware_sim.devices import DeviceOptions, make_device
from firmware_sim.qemu import QEMU_IMAGE
from firmware_sim.twin import MODEL_NAME, TIA_MARGIN, SurrogateDevice, TwinFile, TwinFileError
from host.board import Board, BoardError, LimitError, RemoteLimitError

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "surrogate.onnx"
EXACT = "dac_gain_error=0&dac_offset_error_mv=0"          # nominal DAC volts reach the device
NARROW_V = ((-1.0, 0.5),) * 5 + ((-0.6, 0.25),) * 2


def twin_url(model: Path = MODEL, extra: str = "") -> str:
    return f"sim://?device=surrogate&model={model}&{EXACT}{extra}"


@pytest.fixture(scope="module")
def surrogate() -> core.Surrogate:
    return core.load_surrogate(MODEL)


def _volts(limits: np.ndarray, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(limits[:, 0], limits[:, 1], (n, N_ELECTRODES))


def _predict(s: core.Surrogate, board: Board, volts: np.ndarray) -> np.ndarray:
    """The core's nA on the DAC-quantised volts the board really applies."""
    nominal = board.codes_to_volts(board.volts_to_codes(volts))
    return s.evaluate(nominal.astype(np.float32)).astype(np.float64)


def _modified_copy(path: Path, ranges: tuple[tuple[float, float], ...], amplification: float,
                   scale_last_layer: float) -> Path:
    """The shipped surrogate with other electrode ranges and amplification, its last layer times
    `scale_last_layer` (1 / amplification keeps the currents)."""
    m = onnx.load(str(MODEL))
    last = [n for n in m.graph.node if n.op_type == "Gemm"][-1]
    inits = {t.name: t for t in m.graph.initializer}
    for name in last.input[1:]:
        t = inits[name]
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(scale_last_layer), name))
    props = {p.key: p for p in m.metadata_props}
    props["dnpu.electrode_ranges_v"].value = str([list(r) for r in ranges])
    props["dnpu.amplification"].value = repr(amplification)
    if scale_last_layer * amplification != 1.0:                 # the currents change: so does their range
        lo, hi = json.loads(props["dnpu.output_range_na"].value)
        k = scale_last_layer * amplification
        props["dnpu.output_range_na"].value = str([lo * k, hi * k])
    onnx.save(m, str(path))
    return path


def test_clean_twin_measures_the_core_prediction(surrogate: core.Surrogate) -> None:
    with Board.open(twin_url(extra="&noise=0")) as b:
        ident = b.identity
        assert ident["device"]["model"] == MODEL_NAME and ident["device"]["file"] == "surrogate.onnx"
        assert len(ident["device"]["sha256"]) == 64 and ident["device"]["source"]["board"]["serial"]
        lsb = ident["adc"]["na_per_code"]
        v = _volts(b.limits_v, 3000, seed=1)
        got = b.measure(v)
        want = _predict(surrogate, b, v)
        assert np.abs(got - want).max() <= lsb + 1e-9              # one ADC code
        again = b.measure(v, oversample=4)
        assert np.abs(again - want).max() <= lsb + 1e-9


def test_limits_and_adc_scale_come_from_the_file(surrogate: core.Surrogate) -> None:
    meta = TwinFile.load(MODEL)
    with Board.open(twin_url(extra="&noise=0")) as b:
        ident = b.identity
        assert ident["limits_v"] == [list(r) for r in meta.electrode_ranges_v]
        lo, hi = meta.output_range_na
        tia = ident["device"]["tia_range_na"]
        assert tia[0] == pytest.approx(lo - TIA_MARGIN * (hi - lo)) and tia[1] == pytest.approx(hi + TIA_MARGIN * (hi - lo))
        assert ident["adc"]["full_scale_na"] == list(adc_span_for(tuple(tia)))
        assert ident["adc"]["full_scale_na"][0] <= tia[0] and ident["adc"]["full_scale_na"][1] >= tia[1]
        v = np.zeros((3, N_ELECTRODES))
        v[1, 5] = meta.electrode_ranges_v[5][1] + 0.01
        with pytest.raises(LimitError, match="e5 sample 1"):
            b.measure(v)
        codes = b.volts_to_codes(np.zeros((1, N_ELECTRODES)))[0].astype(np.int64)
        codes[0] = ident["limit_codes"][0][0] - 1                    # just below e0's hard limit
        with pytest.raises(RemoteLimitError, match="e0"):
            b.link.request("SET", tail=codes.astype(np.uint16), rate_mv_per_s=0)
    with Board.open(twin_url(extra="&noise=0&limits=-0.5:0.25")) as b:   # limits= given wins
        assert b.identity["limits_v"] == [[-0.5, 0.25]] * N_ELECTRODES


def test_modified_copy_gives_its_limits_and_the_same_currents(tmp_path: Path, surrogate: core.Surrogate) -> None:
    same = _modified_copy(tmp_path / "narrow.onnx", NARROW_V, 2.5, 1 / 2.5)
    louder = _modified_copy(tmp_path / "louder.onnx", NARROW_V, 10.0, 1.0)
    assert core.load_surrogate(same).amplification == 2.5
    with Board.open(twin_url(same, "&noise=0")) as b:
        assert b.identity["limits_v"] == [list(r) for r in NARROW_V]
        assert b.identity["adc"]["na_per_code"] == pytest.approx(0.01)
        v = _volts(b.limits_v, 2000, seed=2)
        got = b.measure(v)
        assert np.abs(got - _predict(surrogate, b, v)).max() <= 0.01 + 1e-6
    with Board.open(twin_url(louder, "&noise=0")) as b:            # 10x the currents: 10x the ADC scale
        ident = b.identity
        assert ident["adc"]["na_per_code"] == pytest.approx(0.1)
        assert ident["device"]["amplification"] == 10.0
        got = b.measure(v)
        want = 10.0 * _predict(surrogate, b, v)
        assert np.abs(got - want).max() <= 0.1 + 1e-5


def test_noise_is_the_file_floor_and_oversample_averages_it(surrogate: core.Surrogate) -> None:
    floor = TwinFile.load(MODEL).noise_floor_na
    with Board.open(twin_url(extra="&seed=5")) as b:
        assert b.identity["device"]["noise_na"] == pytest.approx(floor)
        v = _volts(b.limits_v, 2000, seed=3)
        clean = _predict(surrogate, b, v)
        inside = (clean > -290) & (clean < 90)                      # well inside the TIA range
        r1 = (b.measure(v) - clean)[inside]
        r16 = (b.measure(v, oversample=16) - clean)[inside]
    assert inside.sum() > 1500
    assert abs(r1.mean()) < 0.2 and r1.std() == pytest.approx(floor, rel=0.15)
    assert r16.std() == pytest.approx(floor / 4, rel=0.15)


def test_noise_options_and_one_seed_one_sequence() -> None:
    v = _volts(np.array(NARROW_V), 4000, seed=4)

    def run(seed: int, **opts) -> np.ndarray:
        dev = make_device(DeviceOptions(device="surrogate", model=str(MODEL), **opts), seed)
        return dev.convert(v, 1e-5)

    clean = run(0, noise=0.0)
    np.testing.assert_array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))
    assert np.std(run(1, noise_na=3.0) - clean) == pytest.approx(3.0, rel=0.1)
    assert np.std(run(1, noise=2.0) - clean) == pytest.approx(2 * TwinFile.load(MODEL).noise_floor_na, rel=0.1)
    # drift: a slow walk of 5 nA RMS (white noise off): 20 time constants in 20,000 steps of 1 ms,
    # each step ~0.22 nA RMS
    dev = SurrogateDevice(TwinFile.load(MODEL), seed=2, noise_na=0.0, drift_na=5.0)
    d = np.concatenate([dev.convert(v, 1e-3) for _ in range(5)]) - np.tile(clean, 5)
    assert 2.0 < np.abs(d).max() < 40.0 and np.abs(np.diff(d)).max() < 1.5
    dev.reset()
    assert abs(dev.convert(v[:1], 1e-5)[0] - clean[0]) < 0.1      # reset: the drift back at 0


def test_firmware_adopts_the_twin_unless_limits_are_given() -> None:
    dev = SurrogateDevice.from_file(MODEL, noise_na=0.0)
    assert Firmware(BoardConfig(), dev).cfg.limits_v == TwinFile.load(MODEL).electrode_ranges_v
    given = ((-0.3, 0.2),) * N_ELECTRODES
    assert Firmware(BoardConfig(limits_v=given), dev).cfg.limits_v == given


@pytest.mark.parametrize("query, message", [
    ("device=surrogate", "device=surrogate needs model=FILE"),
    (f"device=linear&model={MODEL}", "model needs device=surrogate"),
    ("device=dnpu&drift=1", "drift needs device=surrogate"),
    (f"device=surrogate&model={MODEL}&noise=1&noise_na=1", "noise .a level. or noise_na .nA., not both"),
    ("device=surrogate&model=/no/such/file.onnx", "file not found"),
    (f"device=surrogate&model={ROOT / 'models' / 'mnist.onnx'}", "unsupported node"),
    (f"device=surrogate&model={MODEL}&firmware=native", "use firmware=python or firmware=qemu"),
])
def test_bad_options_are_refused_clearly(query: str, message: str) -> None:
    with pytest.raises(BoardError, match=message):
        Board.open(f"sim://?{query}")


def test_files_that_cannot_be_twins(tmp_path: Path) -> None:
    m = onnx.load(str(MODEL))
    for p in m.metadata_props:
        if p.key == "dnpu.format":
            p.value = "something-else/1"
    onnx.save(m, str(tmp_path / "other.onnx"))
    with pytest.raises(TwinFileError, match="not a DNPU surrogate"):
        TwinFile.load(tmp_path / "other.onnx")
    m = onnx.load(str(MODEL))                   # a surrogate of a chip with 6 electrodes
    first = [n for n in m.graph.node if n.op_type == "Gemm"][0]
    w = {t.name: t for t in m.graph.initializer}[first.input[1]]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w)[:, :6], w.name))
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 6
    onnx.save(m, str(tmp_path / "six.onnx"))
    with pytest.raises(TwinFileError, match="6 inputs .* the board has 7 electrodes"):
        TwinFile.load(tmp_path / "six.onnx")


@pytest.mark.skipif(shutil.which("qemu-system-arm") is None or not QEMU_IMAGE.exists(),
                    reason="qemu-system-arm or the qemu image (make firmware-qemu) missing")
def test_qemu_firmware_serves_the_twin(surrogate: core.Surrogate) -> None:
    """The qemu port's analog side is this simulator's device: the twin, its limits and its ADC
    scale travel in the boot configuration block."""
    with Board.open(twin_url(extra="&noise=0&watchdog_ms=2000&firmware=qemu")) as b:
        assert b.identity["device"]["model"] == MODEL_NAME
        assert b.identity["limits_v"] == [list(r) for r in TwinFile.load(MODEL).electrode_ranges_v]
        v = _volts(b.limits_v, 300, seed=6)
        assert np.abs(b.measure(v) - _predict(surrogate, b, v)).max() <= b.identity["adc"]["na_per_code"] + 1e-9
