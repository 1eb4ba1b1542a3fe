import ELF

/// A range of bytes that the kernel (or the program loader) rewrites at boot, at module load or
/// later at run time, so that the live bytes there are not the file's bytes.
///
/// Verification masks these bytes instead of comparing them; `RuntimeSites` finds them.
public struct RuntimeSite: Sendable, Hashable, CustomStringConvertible {
    /// Why the bytes change: the table (or mechanism) that lists the site.
    public enum Table: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
        /// An ordinary relocation, filled in by the module loader (or the dynamic loader).
        case relocation = "relocation"
        /// ftrace: `call __fentry__` becomes a 5-byte NOP at load, a call again when traced.
        case mcountLoc = "__mcount_loc"
        /// `jmp __x86_return_thunk` may become `ret; int3...`.
        case returnSites = ".return_sites"
        /// A call or jump to a retpoline thunk may become `call *%reg` (with lfence) or stay.
        case retpolineSites = ".retpoline_sites"
        /// A `call __SCT__name` may be turned into a direct call to the current target.
        case staticCallSites = ".static_call_sites"
        /// The `__SCT__name` trampoline itself: its `jmp target` follows static_call_update().
        case staticCallTrampoline = "__SCT__ trampoline"
        /// A static key's jump or NOP (2 or 5 bytes) flips when the key changes.
        case jumpTable = "__jump_table"
        /// An alternative: the original instruction(s) replaced by a CPU-feature variant at boot.
        case altInstructions = ".altinstructions"
        /// A paravirt call site patched to native code at boot.
        case paraInstructions = ".parainstructions"
        /// A `lock` prefix, turned into a `ds` prefix (0x3e) on a uniprocessor.
        case smpLocks = ".smp_locks"
        /// A field adjusted by the decompressor for the KASLR slide (the table appended to vmlinux).
        case kaslr = "KASLR relocation"

        public var description: String { rawValue }

        /// One line for listings and error messages.
        public var meaning: String {
            switch self {
            case .relocation: "relocated at load"
            case .mcountLoc: "ftrace call __fentry__, a NOP once loaded"
            case .returnSites: "jmp __x86_return_thunk, may become ret; int3"
            case .retpolineSites: "retpoline thunk call, may become an indirect call"
            case .staticCallSites: "static call, may become a direct call"
            case .staticCallTrampoline: "static call trampoline, follows static_call_update"
            case .jumpTable: "static key jump or NOP"
            case .altInstructions: "alternative instruction, replaced per CPU feature at boot"
            case .paraInstructions: "paravirt call, patched to native code at boot"
            case .smpLocks: "lock prefix, ds on a uniprocessor"
            case .kaslr: "adjusted for the KASLR slide"
            }
        }
    }

    /// Index of the section (in the file the site was found in) holding the bytes.
    public var section: Int
    /// Offset of the first rewritten byte from the start of the section.
    public var offset: UInt64
    /// How many bytes may be rewritten.
    public var length: Int
    public var table: Table

    public init(section: Int, offset: UInt64, length: Int, table: Table) {
        self.section = section
        self.offset = offset
        self.length = length
        self.table = table
    }

    /// The section-relative byte range.
    public var range: Range<UInt64> { offset..<offset + UInt64(length) }

    public var description: String {
        "section \(section)+\(Hex.address(offset)) (\(length) bytes): \(table) (\(table.meaning))"
    }
}
