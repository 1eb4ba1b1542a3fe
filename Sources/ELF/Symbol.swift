/// One entry of `.symtab` or `.dynsym`.
public struct Symbol: Sendable, Hashable {
    /// Position in its symbol table (0 is the null symbol).
    public var index: Int
    public var name: String
    public var value: UInt64
    public var size: UInt64
    public var type: SymbolType
    public var binding: SymbolBinding
    /// `st_other`; the low two bits are the visibility.
    public var other: UInt8
    /// `st_shndx` with SHN_XINDEX resolved through SHT_SYMTAB_SHNDX; special values
    /// (`ELFConstants.SHN_UNDEF`, `SHN_ABS`, `SHN_COMMON`) are kept as they are. In files with more
    /// than 65280 sections a resolved index can equal a special value: `hasSpecialSectionIndex` tells.
    public var sectionIndex: UInt32
    /// `st_shndx` as stored (0xffff when the index is in SHT_SYMTAB_SHNDX).
    public var rawSectionIndex: UInt16

    public init(index: Int, name: String, value: UInt64, size: UInt64, type: SymbolType,
                binding: SymbolBinding, other: UInt8, sectionIndex: UInt32, rawSectionIndex: UInt16? = nil) {
        self.index = index
        self.name = name
        self.value = value
        self.size = size
        self.type = type
        self.binding = binding
        self.other = other
        self.sectionIndex = sectionIndex
        self.rawSectionIndex = rawSectionIndex ?? UInt16(truncatingIfNeeded: min(sectionIndex, 0xffff))
    }

    public var isUndefined: Bool { rawSectionIndex == UInt16(ELFConstants.SHN_UNDEF) }
    public var isDefined: Bool { !isUndefined }
    /// SHN_ABS: the value is an absolute number, not an address in a section.
    public var isAbsolute: Bool { rawSectionIndex == UInt16(ELFConstants.SHN_ABS) }
    /// SHN_COMMON: a common block not yet allocated (value is its alignment).
    public var isCommon: Bool { rawSectionIndex == UInt16(ELFConstants.SHN_COMMON) }
    /// `sectionIndex` is a reserved value (SHN_ABS, SHN_COMMON, processor/OS ranges), not a section.
    public var hasSpecialSectionIndex: Bool {
        rawSectionIndex >= UInt16(ELFConstants.SHN_LORESERVE) && rawSectionIndex != UInt16(ELFConstants.SHN_XINDEX)
    }
    /// STV_DEFAULT 0, STV_INTERNAL 1, STV_HIDDEN 2, STV_PROTECTED 3.
    public var visibility: UInt8 { other & 0x3 }
}

/// `ELF_ST_TYPE(st_info)`.
public enum SymbolType: Sendable, Hashable {
    case notype, object, function, section, file, common, tls, gnuIFunc, other(UInt8)

    public init(rawValue: UInt8) {
        switch rawValue {
        case 0: self = .notype
        case 1: self = .object
        case 2: self = .function
        case 3: self = .section
        case 4: self = .file
        case 5: self = .common
        case 6: self = .tls
        case 10: self = .gnuIFunc
        default: self = .other(rawValue)
        }
    }

    public var rawValue: UInt8 {
        switch self {
        case .notype: return 0
        case .object: return 1
        case .function: return 2
        case .section: return 3
        case .file: return 4
        case .common: return 5
        case .tls: return 6
        case .gnuIFunc: return 10
        case .other(let value): return value
        }
    }
}

/// `ELF_ST_BIND(st_info)`.
public enum SymbolBinding: Sendable, Hashable {
    case local, global, weak, other(UInt8)

    public init(rawValue: UInt8) {
        switch rawValue {
        case 0: self = .local
        case 1: self = .global
        case 2: self = .weak
        default: self = .other(rawValue)
        }
    }

    public var rawValue: UInt8 {
        switch self {
        case .local: return 0
        case .global: return 1
        case .weak: return 2
        case .other(let value): return value
        }
    }
}

/// A symbol table checked once (contents, string table, SHN_XINDEX table), then decoded entry by
/// entry on demand: `symbols()` walks all of it, relocations look up single entries.
struct SymbolTable {
    let section: Section
    let reader: ByteReader
    let elfClass: ELFClass
    let strings: StringTable
    let start: Int
    let entrySize: Int
    let count: Int
    /// SHT_SYMTAB_SHNDX contents (start, entry count), when the file has one for this table.
    let extendedIndexes: (start: Int, count: Int)?

    init(file: ELFFile, section: Section) throws(ELFError) {
        let reader = file.reader
        let what = "\(section.label) (symbol table)"
        let minimum = Raw.Symbol.size(file.header.elfClass)
        let headerOffset = file.headerOffset(of: section)
        guard section.type != ELFConstants.SHT_NOBITS else {
            throw .malformed(file: reader.file, structure: what, offset: headerOffset,
                             expected: "symbols in the file", found: "SHT_NOBITS")
        }
        guard section.entrySize >= UInt64(minimum), section.entrySize <= 0x1000 else {
            throw .malformed(file: reader.file, structure: "section header \(section.index) (\(section.name)) sh_entsize",
                             offset: headerOffset, expected: "\(minimum) bytes per symbol",
                             found: "\(section.entrySize)")
        }
        start = try reader.range(section.offset, section.size, what)
        entrySize = Int(section.entrySize)
        count = Int(section.size) / entrySize

        guard Int(section.link) < file.sections.count, section.link != 0 else {
            throw .malformed(file: reader.file, structure: "section header \(section.index) (\(section.name)) sh_link",
                             offset: headerOffset, expected: "the index of its string table (below \(file.sections.count))",
                             found: "\(section.link)")
        }
        strings = try file.stringTable(file.sections[Int(section.link)], for: what)

        var extended: (Int, Int)?
        for candidate in file.sections
        where candidate.type == ELFConstants.SHT_SYMTAB_SHNDX && candidate.link == UInt32(section.index) {
            let offset = try reader.range(candidate.offset, candidate.size, "\(candidate.label) (extended section indexes)")
            extended = (offset, Int(candidate.size) / 4)
            break
        }
        extendedIndexes = extended
        self.section = section
        self.reader = reader
        self.elfClass = file.header.elfClass
    }

    /// Entry `index`; the caller checks `index < count` (or gets an error here).
    @inline(__always)
    func symbol(_ index: Int) throws(ELFError) -> Symbol {
        guard index >= 0, index < count else {
            throw .malformed(file: reader.file, structure: "symbol \(index) of \(section.name)",
                             offset: section.offset, expected: "an index below \(count)", found: "\(index)")
        }
        let offset = start + index * entrySize
        let raw = Raw.Symbol(reader, at: offset, class: elfClass)
        let name = try strings.string(at: raw.name, for: "symbol \(index) of \(section.name) at offset \(Hex.address(UInt64(offset)))")
        var sectionIndex = UInt32(raw.sectionIndex)
        if sectionIndex == ELFConstants.SHN_XINDEX {
            guard let table = extendedIndexes, index < table.count else {
                throw .malformed(file: reader.file, structure: "symbol \(index) of \(section.name)", offset: UInt64(offset),
                                 expected: "an SHT_SYMTAB_SHNDX entry for its SHN_XINDEX section index",
                                 found: extendedIndexes == nil ? "no SHT_SYMTAB_SHNDX section" : "a shorter table")
            }
            sectionIndex = reader.u32(table.start + index * 4)
        }
        return Symbol(index: index, name: name, value: raw.value, size: raw.size,
                      type: SymbolType(rawValue: raw.info & 0xf), binding: SymbolBinding(rawValue: raw.info >> 4),
                      other: raw.other, sectionIndex: sectionIndex, rawSectionIndex: raw.sectionIndex)
    }

    func all() throws(ELFError) -> [Symbol] {
        var result: [Symbol] = []
        result.reserveCapacity(count)
        for index in 0..<count { result.append(try symbol(index)) }
        return result
    }
}
