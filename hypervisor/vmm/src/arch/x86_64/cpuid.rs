//! Turns KVM's supported CPUID into what one vCPU of this VM reports: its own APIC ID,
//! a topology of `max_vcpus` single-threaded cores in one package, and the hypervisor
//! bit; the KVM paravirtual leaves (0x4000_0000..) pass through as KVM offers them.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rebuilding the CPUID table: {0:?}")]
    Fam(vmm_sys_util::fam::Error),
}

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_PMU: u32 = 0xa;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_EXT_FEATURES: u32 = 0x8000_0001;
const LEAF_AMD_SIZES: u32 = 0x8000_0008;
const LEAF_AMD_TOPOLOGY: u32 = 0x8000_001e;

const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
/// AMD's core performance counter extension: no PMU is exposed.
const ECX_PERFCTR_CORE: u32 = 1 << 23;

/// Topology level types of leaves 0xb and 0x1f.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Bits of an APIC ID needed to number `count` cores.
fn id_bits(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        32 - (count - 1).leading_zeros()
    }
}

/// SSE3 and SSSE3: every x86-64 CPU KVM runs on has them, and KVM always offers them.
const ECX_SSE3_SSSE3: u32 = (1 << 0) | (1 << 9);

/// Whether this host's KVM looks like it emulates guest ring 0 (PVM): it offers none of
/// the basic SIMD features the host CPU has, because guest CPUID is the host's anyway
/// and only the kernel-visible bits go through KVM.
pub fn looks_ring0_emulated(supported: &CpuId) -> bool {
    let host = std::arch::x86_64::__cpuid(1);
    let offered = supported
        .as_slice()
        .iter()
        .find(|e| e.function == LEAF_FEATURES)
        .map_or(0, |e| e.ecx);
    host.ecx & ECX_SSE3_SSSE3 == ECX_SSE3_SSSE3 && offered & ECX_SSE3_SSSE3 == 0
}

/// The CPUID of the vCPU with `apic_id` (its index) among `max_vcpus` possible ones.
pub fn for_vcpu(supported: &CpuId, apic_id: u32, max_vcpus: u32) -> Result<CpuId, Error> {
    let max_vcpus = max_vcpus.max(1);
    let mut out: Vec<kvm_cpuid_entry2> = Vec::with_capacity(supported.as_slice().len() + 2);
    for entry in supported.as_slice() {
        let mut e = *entry;
        match e.function {
            LEAF_FEATURES => {
                // EBX: APIC ID [31:24], logical processors per package [23:16], CLFLUSH
                // line size in quadwords [15:8].
                e.ebx = (apic_id << 24) | ((max_vcpus & 0xff) << 16) | (8 << 8);
                e.ecx |= ECX_HYPERVISOR;
                if max_vcpus > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS => {
                // Cores per package - 1 in [31:26]; each cache private to one core.
                e.eax &= !(0x3f << 26 | 0xfff << 14);
                e.eax |= (max_vcpus - 1).min(0x3f) << 26;
            }
            LEAF_PMU => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => topology_level(&mut e, apic_id, max_vcpus),
            LEAF_EXT_FEATURES => e.ecx &= !ECX_PERFCTR_CORE,
            LEAF_AMD_SIZES => {
                // ApicIdCoreIdSize [15:12], NC (cores - 1) [7:0].
                e.ecx = (id_bits(max_vcpus) << 12) | ((max_vcpus - 1) & 0xff);
            }
            LEAF_AMD_TOPOLOGY => {
                e.eax = apic_id;
                // One thread per core; the core ID is the APIC ID.
                e.ebx = apic_id & 0xff;
                e.ecx = 0;
            }
            _ => {}
        }
        out.push(e);
    }
    CpuId::from_entries(&out).map_err(Error::Fam)
}

fn topology_level(e: &mut kvm_cpuid_entry2, apic_id: u32, max_vcpus: u32) {
    e.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    e.edx = apic_id;
    match e.index {
        0 => {
            // One thread per core: no bits of the APIC ID number threads.
            e.eax = 0;
            e.ebx = 1;
            e.ecx = LEVEL_SMT << 8;
        }
        1 => {
            e.eax = id_bits(max_vcpus);
            e.ebx = max_vcpus;
            e.ecx = (LEVEL_CORE << 8) | 1;
        }
        n => {
            e.eax = 0;
            e.ebx = 0;
            e.ecx = n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    #[test]
    fn apic_id_and_hypervisor_bit() {
        let sup = CpuId::from_entries(&[entry(1, 0), entry(0xb, 0), entry(0xb, 1)]).unwrap();
        let c = for_vcpu(&sup, 3, 4).unwrap();
        let leaf1 = c.as_slice()[0];
        assert_eq!(leaf1.ebx >> 24, 3);
        assert_eq!((leaf1.ebx >> 16) & 0xff, 4);
        assert_ne!(leaf1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(leaf1.edx & EDX_HTT, 0);
        let core = c.as_slice()[2];
        assert_eq!(core.eax, 2);
        assert_eq!(core.ebx, 4);
        assert_eq!(core.edx, 3);
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(3), 2);
        assert_eq!(id_bits(4), 2);
        assert_eq!(id_bits(5), 3);
    }
}
