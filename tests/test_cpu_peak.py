"""The CPU's peak fp32 FLOPs/s from its flags and clock (models.profile), which the train-step benchmark
divides achieved FLOPs/s by."""

from cifarbench.models.profile import fp32_flops_per_cycle, peak_flops, read_cpu_info

AVX2 = {"sse2", "avx", "fma", "avx2"}
AVX512 = AVX2 | {"avx512f", "avx512bw"}


def test_peak_is_cores_times_clock_times_flops_per_cycle():
    peak, line = peak_flops(AVX512, mhz=3000, cores=2, vendor="GenuineIntel", family=6)
    assert peak == 2 * 3000e6 * 64  # 2 FMA units x 16 fp32 lanes x 2 FLOPs
    assert "2 core(s) x 3,000 MHz x 64 FLOPs/cycle" in line and "assumes 2 x 512-bit FMA units" in line


def test_flops_per_cycle_follow_the_widest_vector_unit():
    assert fp32_flops_per_cycle(AVX2)[0] == 32  # 2 x 8 lanes x 2
    assert fp32_flops_per_cycle({"sse2", "avx"})[0] == 16  # no FMA: one add + one multiply of 8 lanes
    assert fp32_flops_per_cycle({"sse2"})[0] == 8


def test_zen4_avx512_counts_as_two_256_bit_pipes():
    assert fp32_flops_per_cycle(AVX512, "AuthenticAMD", 25)[0] == 32
    assert fp32_flops_per_cycle(AVX512, "AuthenticAMD", 26)[0] == 64  # Zen 5: full-width 512-bit FMAs


def test_cpu_info_takes_max_clock_when_the_kernel_has_one(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2596.1\n"
                       "flags\t\t: fpu avx2 fma avx512f\n\nvendor_id\t: AuthenticAMD\ncpu MHz\t\t: 2700.0\n")
    info = read_cpu_info(cpuinfo, tmp_path / "absent")
    assert (info.model, info.vendor, info.family, info.mhz) == ("AMD EPYC", "AuthenticAMD", 25, 2700.0)
    assert {"avx2", "avx512f"} <= info.flags and "current" in info.mhz_source
    (tmp_path / "max_freq").write_text("3700000\n")  # kHz
    assert read_cpu_info(cpuinfo, tmp_path / "max_freq").mhz == 3700.0
