import ELF

/// The parts of an ELF file a target needs to turn addresses into file offsets: program headers,
/// section headers and notes, read with pread (so it works on /proc/kcore, which cannot be mapped,
/// and on files Suture writes to). Little-endian ELF32/ELF64 only (x86, arm64).
struct ELFLayout: Sendable {
    struct Segment: Sendable, Hashable {
        var type: UInt32
        var flags: UInt32
        var offset: UInt64
        var virtualAddress: UInt64
        var fileSize: UInt64
        var memorySize: UInt64
        var alignment: UInt64
    }

    struct Section: Sendable, Hashable {
        var name: String
        var type: UInt32
        var flags: UInt64
        var address: UInt64
        var offset: UInt64
        var size: UInt64
        var isAllocated: Bool { flags & 0x2 != 0 }
    }

    struct Note: Sendable, Hashable {
        var name: String
        var type: UInt32
        var descriptor: [UInt8]
    }

    static let ptLoad: UInt32 = 1
    static let ptNote: UInt32 = 4
    static let shtNote: UInt32 = 7
    static let shtNobits: UInt32 = 8

    var path: String
    var is64: Bool
    /// e_type: 1 relocatable, 2 executable, 3 shared object, 4 core.
    var type: UInt16
    var machine: UInt16
    var segments: [Segment]
    var sections: [Section]

    var isRelocatable: Bool { type == 1 }

    /// Reads the headers through `file`. Caps keep a corrupt header from asking for gigabytes.
    static func read(_ file: OpenFile) throws(TargetError) -> ELFLayout {
        let path = file.path
        func fail(_ structure: String, _ offset: UInt64, _ expected: String, _ found: String) -> TargetError {
            .malformedELF(file: path, structure: structure, offset: offset, expected: expected, found: found)
        }
        func readBytes(_ offset: UInt64, _ count: Int, _ structure: String) throws(TargetError) -> [UInt8] {
            do { return try file.read(offset: offset, count: count, address: offset) } catch {
                throw fail(structure, offset, "\(count) readable byte(s)", "\(error)")
            }
        }
        let ident = try readBytes(0, 16, "ELF identification")
        guard ident[0] == 0x7f, ident[1] == 0x45, ident[2] == 0x4c, ident[3] == 0x46 else {
            throw fail("ELF identification", 0, "magic 7f 45 4c 46", Hex.bytes(ident[0..<4]))
        }
        guard ident[4] == 1 || ident[4] == 2 else { throw fail("EI_CLASS", 4, "1 or 2", "\(ident[4])") }
        guard ident[5] == 1 else { throw fail("EI_DATA", 5, "1 (little-endian)", "\(ident[5])") }
        let is64 = ident[4] == 2
        let header = try readBytes(0, is64 ? 64 : 52, "ELF header")
        let r = LittleEndian(header)
        let type = r.u16(16), machine = r.u16(18)
        let phoff = is64 ? r.u64(32) : UInt64(r.u32(28))
        let shoff = is64 ? r.u64(40) : UInt64(r.u32(32))
        let phentsize = Int(r.u16(is64 ? 54 : 42)), phnum = Int(r.u16(is64 ? 56 : 44))
        let shentsize = Int(r.u16(is64 ? 58 : 46)), shnumField = Int(r.u16(is64 ? 60 : 48))
        let shstrndxField = Int(r.u16(is64 ? 62 : 50))

        var segments: [Segment] = []
        if phnum > 0 {
            let need = is64 ? 56 : 32
            guard phentsize >= need else { throw fail("e_phentsize", is64 ? 54 : 42, "at least \(need)", "\(phentsize)") }
            guard phnum < 0xffff else { throw fail("e_phnum", is64 ? 56 : 44, "a count below 0xffff", "PN_XNUM") }
            let table = try readBytes(phoff, phentsize * phnum, "program header table")
            let t = LittleEndian(table)
            for i in 0..<phnum {
                let o = i * phentsize
                if is64 {
                    segments.append(Segment(type: t.u32(o), flags: t.u32(o + 4), offset: t.u64(o + 8),
                                            virtualAddress: t.u64(o + 16), fileSize: t.u64(o + 32),
                                            memorySize: t.u64(o + 40), alignment: t.u64(o + 48)))
                } else {
                    segments.append(Segment(type: t.u32(o), flags: t.u32(o + 24), offset: UInt64(t.u32(o + 4)),
                                            virtualAddress: UInt64(t.u32(o + 8)), fileSize: UInt64(t.u32(o + 16)),
                                            memorySize: UInt64(t.u32(o + 20)), alignment: UInt64(t.u32(o + 28))))
                }
            }
        }

        var sections: [Section] = []
        if shoff != 0 {
            let need = is64 ? 64 : 40
            guard shentsize >= need else { throw fail("e_shentsize", is64 ? 58 : 46, "at least \(need)", "\(shentsize)") }
            // Section 0 holds the real count and string table index when they overflow 16 bits.
            let first = LittleEndian(try readBytes(shoff, shentsize, "section header 0"))
            let shnum = shnumField == 0 ? Int(is64 ? first.u64(32) : UInt64(first.u32(20))) : shnumField
            let shstrndx = shstrndxField == 0xffff ? Int(first.u32(is64 ? 40 : 24)) : shstrndxField
            guard shnum <= 1 << 20 else { throw fail("section count", shoff, "at most 1048576", "\(shnum)") }
            let table = LittleEndian(try readBytes(shoff, shentsize * shnum, "section header table"))
            var raw: [(nameIndex: UInt32, section: Section)] = []
            for i in 0..<shnum {
                let o = i * shentsize
                let s: Section
                if is64 {
                    s = Section(name: "", type: table.u32(o + 4), flags: table.u64(o + 8), address: table.u64(o + 16),
                                offset: table.u64(o + 24), size: table.u64(o + 32))
                } else {
                    s = Section(name: "", type: table.u32(o + 4), flags: UInt64(table.u32(o + 8)),
                                address: UInt64(table.u32(o + 12)), offset: UInt64(table.u32(o + 16)),
                                size: UInt64(table.u32(o + 20)))
                }
                raw.append((table.u32(o), s))
            }
            var names: [UInt8] = []
            if shstrndx > 0, shstrndx < raw.count {
                let strtab = raw[shstrndx].section
                guard strtab.size <= 64 << 20 else { throw fail("section name table size", shoff, "at most 64 MiB", "\(strtab.size)") }
                names = try readBytes(strtab.offset, Int(strtab.size), "section name table")
            }
            for (nameIndex, var section) in raw {
                section.name = LittleEndian(names).cString(Int(nameIndex))
                sections.append(section)
            }
        }
        return ELFLayout(path: path, is64: is64, type: type, machine: machine, segments: segments, sections: sections)
    }

    /// The file offset of `address` and how many bytes from there lie in the same PT_LOAD segment's
    /// file image. Bytes past p_filesz (.bss) are not in the file and return nil.
    func fileOffset(ofAddress address: UInt64) -> (offset: UInt64, available: UInt64)? {
        for s in segments where s.type == Self.ptLoad && s.fileSize > 0 {
            if address >= s.virtualAddress, address - s.virtualAddress < s.fileSize {
                let delta = address - s.virtualAddress
                return (s.offset + delta, s.fileSize - delta)
            }
        }
        return nil
    }

    /// Splits `count` bytes at `address` into file ranges through PT_LOAD segments (a read may
    /// cross from one segment into the next when they are contiguous in memory). Nil when some
    /// byte is not in the file.
    func fileRanges(address: UInt64, count: Int) -> [(offset: UInt64, length: Int)]? {
        var ranges: [(offset: UInt64, length: Int)] = []
        var current = address
        var left = UInt64(count)
        while left > 0 {
            guard let hit = fileOffset(ofAddress: current) else { return nil }
            let length = min(left, hit.available)
            ranges.append((hit.offset, Int(length)))
            current &+= length
            left -= length
        }
        return ranges
    }

    /// Notes from SHT_NOTE sections, else from PT_NOTE segments.
    func notes(_ file: OpenFile) throws(TargetError) -> [Note] {
        var regions: [(offset: UInt64, size: UInt64, alignment: UInt64)] = sections
            .filter { $0.type == Self.shtNote && $0.size > 0 }
            .map { ($0.offset, $0.size, 4) }
        if regions.isEmpty {
            regions = segments.filter { $0.type == Self.ptNote && $0.fileSize > 0 }
                .map { ($0.offset, $0.fileSize, $0.alignment == 8 ? 8 : 4) }
        }
        var notes: [Note] = []
        for region in regions {
            guard region.size <= 16 << 20 else {
                throw .malformedELF(file: path, structure: "note region", offset: region.offset,
                                    expected: "at most 16 MiB", found: "\(region.size) bytes")
            }
            let bytes = try file.read(offset: region.offset, count: Int(region.size), address: region.offset)
            notes += try Self.parseNotes(bytes, alignment: Int(region.alignment), file: path, baseOffset: region.offset)
        }
        return notes
    }

    /// Parses a packed sequence of notes (namesz, descsz, type, name, desc; each padded).
    static func parseNotes(_ bytes: [UInt8], alignment: Int, file: String, baseOffset: UInt64) throws(TargetError) -> [Note] {
        let r = LittleEndian(bytes)
        var notes: [Note] = []
        var o = 0
        func pad(_ n: Int) -> Int { (n + alignment - 1) & ~(alignment - 1) }
        while o + 12 <= bytes.count {
            let namesz = Int(r.u32(o)), descsz = Int(r.u32(o + 4)), type = r.u32(o + 8)
            let nameStart = o + 12
            let descStart = nameStart + pad(namesz)
            guard namesz <= bytes.count, descsz <= bytes.count, descStart + descsz <= bytes.count else {
                throw .malformedELF(file: file, structure: "note header", offset: baseOffset + UInt64(o),
                                    expected: "name and descriptor inside the \(bytes.count)-byte note region",
                                    found: "namesz \(namesz), descsz \(descsz)")
            }
            let name = r.cString(nameStart, limit: namesz)
            notes.append(Note(name: name, type: type, descriptor: Array(bytes[descStart..<descStart + descsz])))
            o = descStart + pad(descsz)
        }
        return notes
    }

    /// The GNU build-id (NT_GNU_BUILD_ID = 3, owner "GNU") in lowercase hex.
    static func buildID(in notes: [Note]) -> String? {
        notes.first { $0.name == "GNU" && $0.type == 3 }.map { Hex.bytes($0.descriptor, separator: "") }
    }
}

/// Bounds-checked little-endian loads; out-of-range reads give 0 (callers check sizes first).
struct LittleEndian {
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func u16(_ o: Int) -> UInt16 { UInt16(truncatingIfNeeded: load(o, 2)) }
    func u32(_ o: Int) -> UInt32 { UInt32(truncatingIfNeeded: load(o, 4)) }
    func u64(_ o: Int) -> UInt64 { load(o, 8) }

    private func load(_ o: Int, _ n: Int) -> UInt64 {
        guard o >= 0, o + n <= bytes.count else { return 0 }
        var v: UInt64 = 0
        for i in (0..<n).reversed() { v = v << 8 | UInt64(bytes[o + i]) }
        return v
    }

    /// The NUL-terminated string at `o` (at most `limit` bytes).
    func cString(_ o: Int, limit: Int = Int.max) -> String {
        guard o >= 0, o < bytes.count else { return "" }
        var end = o
        let stop = limit == Int.max ? bytes.count : min(bytes.count, o + limit)
        while end < stop, bytes[end] != 0 { end += 1 }
        return String(decoding: bytes[o..<end], as: UTF8.self)
    }
}
