"""Virtual DNPU: seeded dopant-network physics (mean-field steady state, C kernel) behind the
analog chain of a bench board. See docs/virtual-dnpu.md.

    from firmware_sim.physics import VirtualDNPU, NullDevice
    dev = VirtualDNPU.from_seed(3)                 # implements firmware_sim.analog.AnalogDevice
    na = dev.convert(volts, sample_period_s=1e-4, oversample=4)
"""
from .device import AnalogConfig, NullDevice, VirtualDNPU
from .geometry import WORKING_RANGES_V, DeviceParams, Geometry, make_geometry
from .reference import SolverConfig

__all__ = ["AnalogConfig", "DeviceParams", "Geometry", "NullDevice", "SolverConfig", "VirtualDNPU",
           "WORKING_RANGES_V", "make_geometry"]
