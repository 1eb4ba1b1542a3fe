/// Everything that can go wrong while reading an ELF file, a compressed module or a kernel image.
///
/// Each case names the file, the structure being read (`section header 12`, `symbol 40 of .symtab`,
/// `relocation 7 of .rela.text`), the file offset, and what was expected and found, so a message is
/// enough to find the bad byte with a hex editor.
public enum ELFError: Error, CustomStringConvertible, Sendable, Hashable {
    /// A system call failed: `operation` is the call (`open`, `fstat`, `mmap`), `errno` its error.
    case io(file: String, operation: String, errno: Int32)
    /// The structure needs `needed` bytes at `offset` but only `available` remain in the file.
    case truncated(file: String, structure: String, offset: UInt64, needed: UInt64, available: UInt64)
    /// The file does not start with `\x7fELF` (nor with a known compression magic).
    case badMagic(file: String, found: [UInt8])
    /// Well-formed but not something Suture reads (big-endian, unknown class, unknown compression).
    case unsupported(file: String, structure: String, offset: UInt64, expected: String, found: String)
    /// A name index points outside its string table.
    case badStringIndex(file: String, structure: String, table: String, index: UInt64, tableSize: UInt64)
    /// A string starting at `offset` in `table` has no terminating NUL before the table's end.
    case unterminatedString(file: String, structure: String, table: String, offset: UInt64)
    /// A field holds a value that cannot be right (entry size, count, link, index, alignment).
    case malformed(file: String, structure: String, offset: UInt64, expected: String, found: String)
    /// No PT_LOAD segment (or SHF_ALLOC section) holds `count` file bytes at `address`.
    case addressNotMapped(file: String, address: UInt64, count: Int)
    /// A compressed stream could not be decoded.
    case decompression(file: String, format: String, offset: UInt64, expected: String, found: String)

    /// The file (or name) the error is about.
    public var file: String {
        switch self {
        case .io(let file, _, _), .truncated(let file, _, _, _, _), .badMagic(let file, _),
             .unsupported(let file, _, _, _, _), .badStringIndex(let file, _, _, _, _),
             .unterminatedString(let file, _, _, _), .malformed(let file, _, _, _, _),
             .addressNotMapped(let file, _, _), .decompression(let file, _, _, _, _):
            return file
        }
    }

    public var description: String {
        switch self {
        case let .io(file, operation, errno):
            return "\(file): \(operation) failed: \(String(cString: strerror(errno))) (errno \(errno))"
        case let .truncated(file, structure, offset, needed, available):
            return "\(file): \(structure) at offset \(Hex.address(offset)) is truncated: "
                + "expected \(needed) bytes, found \(available)"
        case let .badMagic(file, found):
            return "\(file): not an ELF file: expected magic 7f 45 4c 46 (or xz/zstd/gzip), found "
                + (found.isEmpty ? "an empty file" : Hex.bytes(found))
        case let .unsupported(file, structure, offset, expected, found):
            return "\(file): \(structure) at offset \(Hex.address(offset)): unsupported: expected \(expected), found \(found)"
        case let .badStringIndex(file, structure, table, index, tableSize):
            return "\(file): \(structure): name index \(Hex.address(index)) is outside \(table) "
                + "(expected below \(Hex.address(tableSize)))"
        case let .unterminatedString(file, structure, table, offset):
            return "\(file): \(structure): string at \(table)+\(Hex.address(offset)) has no terminating NUL "
                + "before the end of the table"
        case let .malformed(file, structure, offset, expected, found):
            return "\(file): \(structure) at offset \(Hex.address(offset)): expected \(expected), found \(found)"
        case let .addressNotMapped(file, address, count):
            return "\(file): no loaded segment or allocated section holds \(count) bytes at \(Hex.address(address))"
        case let .decompression(file, format, offset, expected, found):
            return "\(file): \(format) stream at offset \(Hex.address(offset)): expected \(expected), found \(found)"
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
