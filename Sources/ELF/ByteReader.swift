#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The checked reader: every range taken from the file goes through `range(_:_:_:)`, which refuses
/// offsets and sizes whose sum overflows or passes the end, and names the structure in its error.
/// Once a range is checked, the unchecked field loads (`u8`, `u16`, ...) read inside it.
///
/// A reader does not own the memory: its creator (an `ELFFile`) keeps the `ByteStorage` alive.
struct ByteReader {
    let base: UnsafeRawPointer
    let count: Int
    let file: String

    init(storage: ByteStorage, file: String) {
        base = storage.base
        count = storage.count
        self.file = file
    }

    /// Checks that `size` bytes at `offset` lie inside the file and returns the offset as an `Int`.
    /// `structure` is only evaluated on failure, so hot loops build no strings.
    @inline(__always)
    func range(_ offset: UInt64, _ size: UInt64, _ structure: @autoclosure () -> String) throws(ELFError) -> Int {
        let (end, overflow) = offset.addingReportingOverflow(size)
        guard !overflow, end <= UInt64(count) else {
            let available = offset < UInt64(count) ? UInt64(count) - offset : 0
            throw .truncated(file: file, structure: structure(), offset: offset, needed: size, available: available)
        }
        return Int(offset)
    }

    /// `count * entrySize` without overflow, or a `malformed` error naming the table.
    func tableSize(count: UInt64, entrySize: UInt64, at offset: UInt64,
                   _ structure: @autoclosure () -> String) throws(ELFError) -> UInt64 {
        let (total, overflow) = count.multipliedReportingOverflow(by: entrySize)
        guard !overflow else {
            throw .malformed(file: file, structure: structure(), offset: offset,
                             expected: "a table that fits in the file",
                             found: "\(count) entries of \(entrySize) bytes")
        }
        return total
    }

    @inline(__always) func u8(_ o: Int) -> UInt8 { base.load(fromByteOffset: o, as: UInt8.self) }
    @inline(__always) func u16(_ o: Int) -> UInt16 { UInt16(littleEndian: base.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
    @inline(__always) func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: base.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
    @inline(__always) func u64(_ o: Int) -> UInt64 { UInt64(littleEndian: base.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }

    /// Up to `limit` bytes at `offset` (for error messages): never reads past the end.
    func prefix(at offset: Int, limit: Int) -> [UInt8] {
        guard offset >= 0, offset < count else { return [] }
        let n = Swift.min(limit, count - offset)
        return Array(UnsafeRawBufferPointer(start: base + offset, count: n))
    }

    /// Length of the NUL-terminated string at `offset`, searching at most `limit` bytes; nil when
    /// there is no NUL in that window. The caller has checked `offset + limit <= count`.
    @inline(__always)
    func stringLength(at offset: Int, limit: Int) -> Int? {
        guard limit > 0, let nul = memchr(base + offset, 0, limit) else { return nil }
        return UnsafeRawPointer(nul) - (base + offset)
    }

    @inline(__always)
    func string(at offset: Int, length: Int) -> String {
        String(decoding: UnsafeRawBufferPointer(start: base + offset, count: length), as: UTF8.self)
    }
}

/// A string table section (`.strtab`, `.dynstr`, `.shstrtab`) checked once for bounds.
struct StringTable {
    let reader: ByteReader
    let start: Int
    let size: Int
    /// For messages: `.strtab (section 70)`.
    let label: String

    /// The string at `index`, or an error naming `structure` (the entry that holds the index).
    @inline(__always)
    func string(at index: UInt32, for structure: @autoclosure () -> String) throws(ELFError) -> String {
        let i = Int(index)
        guard i < size else {
            throw .badStringIndex(file: reader.file, structure: structure(), table: label,
                                  index: UInt64(index), tableSize: UInt64(size))
        }
        guard let length = reader.stringLength(at: start + i, limit: size - i) else {
            throw .unterminatedString(file: reader.file, structure: structure(), table: label, offset: UInt64(index))
        }
        return length == 0 ? "" : reader.string(at: start + i, length: length)
    }
}
