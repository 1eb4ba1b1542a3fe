/// One section header, with its name resolved from the section name string table.
public struct Section: Sendable, Hashable {
    /// Position in the section header table; index 0 is the null section.
    public var index: Int
    public var name: String
    /// `sh_type` (see `ELFConstants.SHT_*`).
    public var type: UInt32
    /// `sh_flags` (see `ELFConstants.SHF_*`).
    public var flags: UInt64
    public var address: UInt64
    public var offset: UInt64
    public var size: UInt64
    public var link: UInt32
    public var info: UInt32
    public var alignment: UInt64
    public var entrySize: UInt64

    public init(index: Int, name: String, type: UInt32, flags: UInt64, address: UInt64, offset: UInt64,
                size: UInt64, link: UInt32, info: UInt32, alignment: UInt64, entrySize: UInt64) {
        self.index = index
        self.name = name
        self.type = type
        self.flags = flags
        self.address = address
        self.offset = offset
        self.size = size
        self.link = link
        self.info = info
        self.alignment = alignment
        self.entrySize = entrySize
    }

    public var isAllocated: Bool { flags & ELFConstants.SHF_ALLOC != 0 }
    public var isExecutable: Bool { flags & ELFConstants.SHF_EXECINSTR != 0 }
    public var isWritable: Bool { flags & ELFConstants.SHF_WRITE != 0 }
    /// SHT_NOBITS (`.bss`): occupies memory but no file bytes.
    public var hasFileData: Bool { type != ELFConstants.SHT_NOBITS && type != ELFConstants.SHT_NULL }
    /// SHT_REL or SHT_RELA.
    public var isRelocationTable: Bool { type == ELFConstants.SHT_REL || type == ELFConstants.SHT_RELA }

    /// `section 3 (.text)`: how messages name it.
    var label: String { name.isEmpty ? "section \(index)" : "section \(index) (\(name))" }
}
