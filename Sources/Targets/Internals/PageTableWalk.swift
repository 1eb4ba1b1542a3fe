/// x86-64 address translation through the page tables, for reading kernel memory in QEMU's
/// physical-memory mode when no vCPU can (PTI: a vCPU in user mode runs on page tables that do not
/// map the kernel). Four levels, or five with LA57; 1 GiB and 2 MiB pages.
enum PageTableWalk {
    /// Physical address bits 12…51 of an entry or CR3.
    static let addressMask: UInt64 = 0x000f_ffff_ffff_f000
    static let present: UInt64 = 1
    static let largePage: UInt64 = 1 << 7

    /// The kernel's top-level table from a CR3 value: PCID bits and bit 63 dropped, and with PTI
    /// the user copy (the odd page, bit 12) replaced by the kernel's own (the even page before it).
    static func kernelRoot(cr3: UInt64, pti: Bool) -> UInt64 {
        let root = cr3 & addressMask
        return pti ? root & ~0x1000 : root
    }

    /// Translates `virtual`; returns the physical address and the size of the page holding it, or
    /// nil when some level is not present. `readEntry` reads 8 bytes of physical memory.
    static func translate(_ virtual: UInt64, root: UInt64, levels: Int,
                          readEntry: (UInt64) throws(TargetError) -> UInt64) throws(TargetError) -> (physical: UInt64, pageSize: UInt64)? {
        var table = root
        var shift: UInt64 = levels == 5 ? 48 : 39
        for level in stride(from: levels, through: 1, by: -1) {
            let index = (virtual >> shift) & 0x1ff
            let entry = try readEntry(table &+ index * 8)
            guard entry & present != 0 else { return nil }
            // Level 3 (PDPT) and level 2 (PD) entries may map 1 GiB / 2 MiB pages directly.
            if (level == 3 || level == 2) && entry & largePage != 0 {
                let size: UInt64 = 1 << shift
                return ((entry & addressMask & ~(size - 1)) | (virtual & (size - 1)), size)
            }
            if level == 1 {
                return ((entry & addressMask) | (virtual & 0xfff), 0x1000)
            }
            table = entry & addressMask
            shift -= 9
        }
        return nil
    }
}
