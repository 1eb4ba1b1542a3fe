import ELF

/// Address → file offset through PT_LOAD segments, for targets that read with pread (core files,
/// /proc/kcore, files Suture writes to) rather than through `ELFFile`'s mapping.
struct SegmentMap: Sendable {
    let loads: [Segment]

    init(_ segments: [Segment]) {
        loads = segments.filter { $0.isLoadable && $0.fileSize > 0 }
    }

    /// The file offset of `address` and how many bytes from there lie in the same segment's file
    /// image. Bytes past p_filesz (.bss) are not in the file: nil.
    func fileOffset(ofAddress address: UInt64) -> (offset: UInt64, available: UInt64)? {
        for s in loads where address >= s.virtualAddress && address - s.virtualAddress < s.fileSize {
            let delta = address - s.virtualAddress
            return (s.offset &+ delta, s.fileSize - delta)
        }
        return nil
    }

    /// Splits `count` bytes at `address` into file ranges (a read may run from one segment into the
    /// next when they abut in memory). Nil when some byte is in no segment's file image.
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
}

/// ELF notes held in memory rather than in a file: the kernel's own notes, read from the running
/// kernel between `__start_notes` and `__stop_notes`.
enum MemoryNotes {
    /// Parses a packed sequence of notes (namesz, descsz, type, name, descriptor; 4-byte padded).
    static func parse(_ bytes: [UInt8], source: String, address: UInt64) throws(TargetError) -> [Note] {
        func u32(_ o: Int) -> Int {
            Int(bytes[o]) | Int(bytes[o + 1]) << 8 | Int(bytes[o + 2]) << 16 | Int(bytes[o + 3]) << 24
        }
        func pad(_ n: Int) -> Int { (n + 3) & ~3 }
        var notes: [Note] = []
        var o = 0
        while o + 12 <= bytes.count {
            let nameSize = u32(o), descriptorSize = u32(o + 4), type = UInt32(u32(o + 8))
            let nameStart = o + 12
            guard nameSize <= bytes.count - nameStart else {
                throw .malformedELF(file: source, structure: "note \(notes.count) name", offset: address + UInt64(o),
                                    expected: "at most \(bytes.count - nameStart) bytes", found: "namesz \(nameSize)")
            }
            let descriptorStart = nameStart + pad(nameSize)
            guard descriptorStart <= bytes.count, descriptorSize <= bytes.count - descriptorStart else {
                throw .malformedELF(file: source, structure: "note \(notes.count) descriptor", offset: address + UInt64(o),
                                    expected: "at most \(max(0, bytes.count - descriptorStart)) bytes", found: "descsz \(descriptorSize)")
            }
            let name = String(decoding: bytes[nameStart..<nameStart + nameSize].prefix { $0 != 0 }, as: UTF8.self)
            notes.append(Note(name: name, type: type, descriptor: Array(bytes[descriptorStart..<descriptorStart + descriptorSize])))
            o = descriptorStart + pad(descriptorSize)
        }
        return notes
    }

    /// The GNU build-id in lowercase hex.
    static func buildID(in notes: [Note]) -> String? {
        notes.first(where: \.isGNUBuildID).map { Hex.bytes($0.descriptor, separator: "") }
    }
}
