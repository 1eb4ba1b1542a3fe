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

/// ELF notes held in memory rather than in a file (the kernel's own notes, read from the running
/// kernel between `__start_notes` and `__stop_notes`, or /sys/kernel/notes): parsed by the ELF module.
enum MemoryNotes {
    static func parse(_ bytes: [UInt8], source: String, address: UInt64) throws(TargetError) -> [Note] {
        do { return try Note.parse(bytes, source: source) } catch {
            throw .malformedELF(file: source, structure: "note stream", offset: address,
                                expected: "well-formed ELF notes", found: "\(error)")
        }
    }

    static func buildID(in notes: [Note]) -> String? { Note.buildID(in: notes) }
}
