/// Where one of the kernel's patch-site tables lives and how its entries are laid out (Linux 6.1, x86).
///
/// In a relocatable object (`.o`, `.ko`) the table is the section `sectionName`, and the site each
/// entry names comes from that section's own relocation at the entry's `field` offset: the table
/// holds placeholders until the module loader fills them in. In a linked image (vmlinux) the table
/// lies between the symbols `startSymbol` and `endSymbol`, and the entry holds either an absolute
/// pointer or an s32 relative to the field itself.
struct RuntimeSiteTableLayout: Sendable {
    enum Length: Sendable {
        /// Always this many bytes.
        case fixed(Int)
        /// The length of the instruction at the site (rel8 jump, rel32 call/jmp, Jcc rel32), or
        /// `fallback` when the bytes there are none of those.
        case instruction(fallback: Int)
        /// An unsigned byte at this offset inside the entry (alt_instr.instrlen, paravirt len).
        case entryByte(Int)
    }

    var table: RuntimeSite.Table
    var sectionName: String
    var startSymbol: String
    var endSymbol: String
    /// Bytes per entry.
    var stride: Int
    /// Offset inside the entry of the field naming the site.
    var field: Int = 0
    /// The field is an absolute pointer (address size); otherwise an s32 relative to the field.
    var isPointer: Bool
    var length: Length

    /// The tables of a kernel for a given address size (8 on x86-64, 4 on i386).
    static func kernelTables(addressSize: Int) -> [RuntimeSiteTableLayout] {
        [
            // unsigned long[]: the address of each `call __fentry__`.
            .init(table: .mcountLoc, sectionName: "__mcount_loc", startSymbol: "__start_mcount_loc",
                  endSymbol: "__stop_mcount_loc", stride: addressSize, isPointer: true, length: .fixed(5)),
            // s32[]: `jmp __x86_return_thunk` (5 bytes), or a Jcc to it (6).
            .init(table: .returnSites, sectionName: ".return_sites", startSymbol: "__return_sites",
                  endSymbol: "__return_sites_end", stride: 4, isPointer: false, length: .instruction(fallback: 5)),
            // s32[]: call/jmp (5) or Jcc (6) to __x86_indirect_thunk_*; the kernel never writes past
            // the original instruction (apply_retpolines skips replacements that do not fit).
            .init(table: .retpolineSites, sectionName: ".retpoline_sites", startSymbol: "__retpoline_sites",
                  endSymbol: "__retpoline_sites_end", stride: 4, isPointer: false, length: .instruction(fallback: 6)),
            // struct static_call_site { s32 addr; s32 key; }: the site is a 5-byte call or jmp.
            .init(table: .staticCallSites, sectionName: ".static_call_sites", startSymbol: "__start_static_call_sites",
                  endSymbol: "__stop_static_call_sites", stride: 8, isPointer: false, length: .fixed(5)),
            // struct jump_entry { s32 code; s32 target; long key; }: jmp rel8/NOP2 (2) or jmp rel32/NOP5 (5).
            .init(table: .jumpTable, sectionName: "__jump_table", startSymbol: "__start___jump_table",
                  endSymbol: "__stop___jump_table", stride: 8 + addressSize, isPointer: false,
                  length: .instruction(fallback: 5)),
            // struct alt_instr { s32 instr_offset; s32 repl_offset; u16 cpuid; u8 instrlen; u8 replen; } (packed).
            .init(table: .altInstructions, sectionName: ".altinstructions", startSymbol: "__alt_instructions",
                  endSymbol: "__alt_instructions_end", stride: 12, isPointer: false, length: .entryByte(10)),
            // struct paravirt_patch_site { u8 *instr; u8 type; u8 len; } (padded to two words).
            .init(table: .paraInstructions, sectionName: ".parainstructions", startSymbol: "__parainstructions",
                  endSymbol: "__parainstructions_end", stride: 2 * addressSize, isPointer: true,
                  length: .entryByte(addressSize + 1)),
            // s32[]: each `lock` prefix.
            .init(table: .smpLocks, sectionName: ".smp_locks", startSymbol: "__smp_locks",
                  endSymbol: "__smp_locks_end", stride: 4, isPointer: false, length: .fixed(1)),
        ]
    }

    /// The length of the instruction starting with `b0 b1` when it is one the tables list: jmp rel8
    /// and the 2-byte NOP (2), call/jmp rel32 and the 5-byte NOP (5), Jcc rel32 (6); else nil.
    static func siteInstructionLength(_ b0: UInt8, _ b1: UInt8?) -> Int? {
        switch (b0, b1) {
        case (0xeb, _), (0x66, 0x90): return 2
        case (0xe8, _), (0xe9, _), (0x0f, 0x1f): return 5
        case (0x0f, .some(0x80...0x8f)): return 6
        default: return nil
        }
    }
}
