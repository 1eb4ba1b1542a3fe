/// An ELF file (ELF32 or ELF64, little-endian) read in place from a private read-only mapping.
///
/// The header, section table and program header table are read and checked once, in `init`;
/// symbols, relocations and notes are decoded on each call (cheap: nfs.ko's symtab takes a few ms).
/// Every offset and size from the file is bounds-checked with overflow-safe arithmetic; bad input
/// throws an `ELFError` naming the file, the structure, the offset, and what was expected and found.
public final class ELFFile: @unchecked Sendable {
    // @unchecked: immutable after init; the only reference type inside (ByteStorage) is immutable too.

    /// The path given to `init(path:)`, or the name given to `init(bytes:name:)`.
    public let path: String
    public let header: FileHeader
    /// Index 0 is the null section (when the file has a section table at all).
    public let sections: [Section]
    public let segments: [Segment]
    /// The compression the file was stored with (`xz`, `zstd`, `gzip`), nil when it was plain ELF.
    public let compression: String?

    let storage: ByteStorage
    let reader: ByteReader
    private let sectionHeaderEntrySize: UInt64
    /// Indexes of the SHT_REL/SHT_RELA sections, so per-section relocation lookups do not rescan
    /// tables of 65000+ sections.
    let relocationTableIndexes: [Int]

    /// Maps the file; `.ko.xz`, `.ko.zst`, `.ko.gz` (any file starting with their magic) are
    /// decompressed into memory first.
    public convenience init(path: String) throws(ELFError) {
        let mapped = try ByteStorage.map(path: path)
        if let format = Decompressor.Format(magicOf: mapped.bytes) {
            let plain = try Decompressor.decompress(format, mapped.bytes, file: path, allowTrailingData: false)
            try self.init(storage: plain.storage, path: path, compression: format.name)
        } else {
            try self.init(storage: mapped, path: path, compression: nil)
        }
    }

    /// Reads an ELF image held in memory (copied once); `name` stands for the file in messages.
    /// Compressed images are decompressed like in `init(path:)`.
    public convenience init(bytes: [UInt8], name: String) throws(ELFError) {
        let format = bytes.withUnsafeBytes { Decompressor.Format(magicOf: $0) }
        if let format {
            let plain = try bytes.withUnsafeBytes { raw in
                Result { () throws(ELFError) in
                    try Decompressor.decompress(format, raw, file: name, allowTrailingData: false)
                }
            }.get()
            try self.init(storage: plain.storage, path: name, compression: format.name)
        } else {
            let storage = bytes.withUnsafeBytes { ByteStorage(copying: $0) }
            try self.init(storage: storage, path: name, compression: nil)
        }
    }

    init(storage: ByteStorage, path: String, compression: String?) throws(ELFError) {
        let reader = ByteReader(storage: storage, file: path)
        self.storage = storage
        self.reader = reader
        self.path = path
        self.compression = compression

        let raw = try Self.readHeader(reader)
        let elfClass = raw.elfClass

        // Section headers. Extended numbering: e_shnum == 0 puts the count in section 0's sh_size,
        // e_shstrndx == SHN_XINDEX puts the name table index in section 0's sh_link.
        var rawSections: [Raw.SectionHeader] = []
        let entrySize = UInt64(raw.sectionHeaderEntrySize)
        var nameTableIndex = Int(raw.sectionNameTableIndex)
        if raw.sectionHeaderOffset != 0 {
            let minimum = Raw.SectionHeader.size(elfClass)
            guard entrySize >= UInt64(minimum) else {
                throw .malformed(file: path, structure: "ELF header e_shentsize", offset: elfClass == .elf64 ? 58 : 46,
                                 expected: "at least \(minimum)", found: "\(entrySize)")
            }
            let first = try reader.range(raw.sectionHeaderOffset, entrySize, "section header 0")
            let zero = Raw.SectionHeader(reader, at: first, class: elfClass)
            let count = raw.sectionHeaderCount == 0 ? zero.size : UInt64(raw.sectionHeaderCount)
            if UInt32(raw.sectionNameTableIndex) == ELFConstants.SHN_XINDEX { nameTableIndex = Int(zero.link) }
            // Never trust the count for an allocation: reserve only what the file can hold.
            let fits = (UInt64(reader.count) - min(UInt64(reader.count), raw.sectionHeaderOffset)) / entrySize
            rawSections.reserveCapacity(Int(min(count, fits)))
            var offset = raw.sectionHeaderOffset
            for index in 0..<count {
                let at = try reader.range(offset, entrySize, "section header \(index)")
                rawSections.append(Raw.SectionHeader(reader, at: at, class: elfClass))
                offset += entrySize        // cannot overflow: the range above ended inside the file
            }
        }
        sectionHeaderEntrySize = entrySize

        // Section names.
        var sections: [Section] = []
        sections.reserveCapacity(rawSections.count)
        var names: StringTable?
        if nameTableIndex != Int(ELFConstants.SHN_UNDEF), !rawSections.isEmpty {
            guard nameTableIndex < rawSections.count else {
                throw .malformed(file: path, structure: "ELF header e_shstrndx", offset: elfClass == .elf64 ? 62 : 50,
                                 expected: "a section index below \(rawSections.count)", found: "\(nameTableIndex)")
            }
            let table = rawSections[nameTableIndex]
            let label = "section name table (section \(nameTableIndex))"
            guard table.type != ELFConstants.SHT_NOBITS else {
                throw .malformed(file: path, structure: label, offset: raw.sectionHeaderOffset + UInt64(nameTableIndex) * entrySize,
                                 expected: "a string table with file contents", found: "SHT_NOBITS")
            }
            let start = try reader.range(table.offset, table.size, label)
            names = StringTable(reader: reader, start: start, size: Int(table.size), label: label)
        }
        for (index, s) in rawSections.enumerated() {
            let name = try names?.string(at: s.name, for: "section header \(index)") ?? ""
            sections.append(Section(index: index, name: name, type: s.type, flags: s.flags, address: s.address,
                                    offset: s.offset, size: s.size, link: s.link, info: s.info,
                                    alignment: s.alignment, entrySize: s.entrySize))
        }
        self.sections = sections
        relocationTableIndexes = sections.filter(\.isRelocationTable).map(\.index)

        // Program headers. e_phnum == PN_XNUM puts the count in section 0's sh_info.
        var segments: [Segment] = []
        var programHeaderCount = UInt64(raw.programHeaderCount)
        if raw.programHeaderCount == ELFConstants.PN_XNUM, let zero = rawSections.first {
            programHeaderCount = UInt64(zero.info)
        }
        if raw.programHeaderOffset != 0, programHeaderCount > 0 {
            let minimum = Raw.ProgramHeader.size(elfClass)
            let phEntrySize = UInt64(raw.programHeaderEntrySize)
            guard phEntrySize >= UInt64(minimum) else {
                throw .malformed(file: path, structure: "ELF header e_phentsize", offset: elfClass == .elf64 ? 54 : 42,
                                 expected: "at least \(minimum)", found: "\(phEntrySize)")
            }
            let fits = (UInt64(reader.count) - min(UInt64(reader.count), raw.programHeaderOffset)) / phEntrySize
            segments.reserveCapacity(Int(min(programHeaderCount, fits)))
            var offset = raw.programHeaderOffset
            for index in 0..<programHeaderCount {
                let at = try reader.range(offset, phEntrySize, "program header \(index)")
                let p = Raw.ProgramHeader(reader, at: at, class: elfClass)
                segments.append(Segment(type: p.type, flags: p.flags, offset: p.offset, virtualAddress: p.virtualAddress,
                                        physicalAddress: p.physicalAddress, fileSize: p.fileSize,
                                        memorySize: p.memorySize, alignment: p.alignment))
                offset += phEntrySize
            }
        }
        self.segments = segments

        header = FileHeader(elfClass: elfClass, osABI: raw.osABI, abiVersion: raw.abiVersion,
                            type: FileType(rawValue: raw.type), machine: Machine(rawValue: raw.machine),
                            version: raw.version, entry: raw.entry, flags: raw.flags,
                            programHeaderOffset: raw.programHeaderOffset, sectionHeaderOffset: raw.sectionHeaderOffset,
                            programHeaderCount: segments.count, sectionHeaderCount: sections.count,
                            sectionNameTableIndex: nameTableIndex)
    }

    private static func readHeader(_ reader: ByteReader) throws(ELFError) -> Raw.FileHeader {
        let magic: [UInt8] = [0x7f, 0x45, 0x4c, 0x46]
        let found = reader.prefix(at: 0, limit: Raw.identSize)
        guard found.count >= 4, Array(found[0..<4]) == magic else {
            throw .badMagic(file: reader.file, found: found)
        }
        _ = try reader.range(0, UInt64(Raw.identSize), "ELF identification (e_ident)")
        let elfClass: ELFClass
        switch reader.u8(4) {
        case ELFConstants.ELFCLASS32: elfClass = .elf32
        case ELFConstants.ELFCLASS64: elfClass = .elf64
        case let other:
            throw .unsupported(file: reader.file, structure: "ELF identification EI_CLASS", offset: 4,
                               expected: "1 (ELF32) or 2 (ELF64)", found: "\(other)")
        }
        let encoding = reader.u8(5)
        guard encoding == ELFConstants.ELFDATA2LSB else {
            throw .unsupported(file: reader.file, structure: "ELF identification EI_DATA", offset: 5,
                               expected: "1 (little-endian)",
                               found: encoding == ELFConstants.ELFDATA2MSB ? "2 (big-endian)" : "\(encoding)")
        }
        let version = reader.u8(6)
        guard version == ELFConstants.EV_CURRENT else {
            throw .unsupported(file: reader.file, structure: "ELF identification EI_VERSION", offset: 6,
                               expected: "1 (EV_CURRENT)", found: "\(version)")
        }
        let at = try reader.range(0, UInt64(Raw.FileHeader.size(elfClass)), "ELF header")
        return Raw.FileHeader(reader, at: at, class: elfClass)
    }

    // MARK: Sections

    public func section(named name: String) -> Section? {
        sections.first { $0.name == name }
    }

    /// The section's file bytes, zero-copy; empty for SHT_NOBITS (and SHT_NULL).
    public func data(of section: Section) throws(ELFError) -> ByteView {
        guard section.hasFileData else {
            return ByteView(storage: storage, offset: 0, count: 0, file: path, structure: section.label)
        }
        let start = try reader.range(section.offset, section.size, "\(section.label) contents")
        return ByteView(storage: storage, offset: start, count: Int(section.size), file: path, structure: section.label)
    }

    /// The whole (decompressed) file.
    public var contents: ByteView {
        ByteView(storage: storage, offset: 0, count: storage.count, file: path, structure: "file")
    }

    /// File offset of the section's header entry, for messages.
    func headerOffset(of section: Section) -> UInt64 {
        header.sectionHeaderOffset &+ UInt64(section.index) &* sectionHeaderEntrySize
    }

    func stringTable(_ section: Section, for user: String) throws(ELFError) -> StringTable {
        guard section.hasFileData else {
            throw .malformed(file: path, structure: "\(user) string table \(section.label)", offset: headerOffset(of: section),
                             expected: "a string table with file contents", found: "type \(section.type)")
        }
        let start = try reader.range(section.offset, section.size, "\(section.label) (string table of \(user))")
        return StringTable(reader: reader, start: start, size: Int(section.size),
                           label: section.name.isEmpty ? section.label : section.name)
    }

    /// The NUL-terminated string at `offset` in a string table section (`.strtab`, `.dynstr`, ...).
    public func string(at offset: UInt32, inTable table: Section) throws(ELFError) -> String {
        try stringTable(table, for: "string lookup").string(at: offset, for: "string at \(Hex.address(UInt64(offset))) of \(table.name)")
    }

    // MARK: Symbols

    /// `.symtab` (the first SHT_SYMTAB section); empty when the file is stripped.
    public func symbols() throws(ELFError) -> [Symbol] {
        guard let table = sections.first(where: { $0.type == ELFConstants.SHT_SYMTAB }) else { return [] }
        return try SymbolTable(file: self, section: table).all()
    }

    /// `.dynsym` (the first SHT_DYNSYM section); empty when there is none.
    public func dynamicSymbols() throws(ELFError) -> [Symbol] {
        guard let table = sections.first(where: { $0.type == ELFConstants.SHT_DYNSYM }) else { return [] }
        return try SymbolTable(file: self, section: table).all()
    }

    /// The symbols of a given SHT_SYMTAB or SHT_DYNSYM section.
    public func symbols(in table: Section) throws(ELFError) -> [Symbol] {
        try SymbolTable(file: self, section: table).all()
    }

    // MARK: Addresses

    /// The file offset holding `address`, through the PT_LOAD segments' file parts.
    public func fileOffset(ofAddress address: UInt64) -> UInt64? {
        for segment in segments where segment.type == ELFConstants.PT_LOAD {
            guard address >= segment.virtualAddress else { continue }
            let delta = address - segment.virtualAddress
            if delta < segment.fileSize {
                let (offset, overflow) = segment.offset.addingReportingOverflow(delta)
                return overflow ? nil : offset
            }
        }
        return nil
    }

    /// `count` file bytes at virtual `address`: through a PT_LOAD segment when the file has them,
    /// else through an SHF_ALLOC section with file contents (relocatable objects).
    public func bytes(atAddress address: UInt64, count: Int) throws(ELFError) -> ByteView {
        guard count >= 0 else { throw .addressNotMapped(file: path, address: address, count: count) }
        let wanted = UInt64(count)
        let structure = "bytes at \(Hex.address(address))"
        let loads = segments.filter { $0.type == ELFConstants.PT_LOAD }
        if !loads.isEmpty {
            for segment in loads where address >= segment.virtualAddress {
                let delta = address - segment.virtualAddress
                guard delta < segment.fileSize || (count == 0 && delta == segment.fileSize),
                      wanted <= segment.fileSize - delta else { continue }
                let (offset, overflow) = segment.offset.addingReportingOverflow(delta)
                guard !overflow else { continue }
                let start = try reader.range(offset, wanted, structure)
                return ByteView(storage: storage, offset: start, count: count, file: path, structure: structure)
            }
        } else {
            for section in sections where section.isAllocated && section.hasFileData && address >= section.address {
                let delta = address - section.address
                guard delta < section.size, wanted <= section.size - delta else { continue }
                let (offset, overflow) = section.offset.addingReportingOverflow(delta)
                guard !overflow else { continue }
                let start = try reader.range(offset, wanted, structure + " in \(section.label)")
                return ByteView(storage: storage, offset: start, count: count, file: path, structure: structure)
            }
        }
        throw .addressNotMapped(file: path, address: address, count: count)
    }

    // MARK: Notes

    /// Notes from the SHT_NOTE sections, or (when there are none, as in stripped section tables)
    /// from the PT_NOTE segments.
    public func notes() throws(ELFError) -> [Note] {
        var notes: [Note] = []
        let noteSections = sections.filter { $0.type == ELFConstants.SHT_NOTE }
        if !noteSections.isEmpty {
            for section in noteSections {
                let start = try reader.range(section.offset, section.size, "\(section.label) contents")
                notes += try Note.parse(reader, start: start, size: Int(section.size),
                                        alignment: section.alignment == 8 ? 8 : 4, what: section.name)
            }
            return notes
        }
        for (index, segment) in segments.enumerated() where segment.type == ELFConstants.PT_NOTE {
            let what = "program header \(index) (PT_NOTE)"
            let start = try reader.range(segment.offset, segment.fileSize, what)
            notes += try Note.parse(reader, start: start, size: Int(segment.fileSize),
                                    alignment: segment.alignment == 8 ? 8 : 4, what: what)
        }
        return notes
    }

    /// The GNU build-id (NT_GNU_BUILD_ID descriptor), nil when the file has none.
    public func buildID() throws(ELFError) -> [UInt8]? {
        try notes().first(where: \.isGNUBuildID)?.descriptor
    }
}
