import ELF
#if canImport(Glibc)
import Glibc
#endif

/// The symbols of a running process: every ELF file mapped in `/proc/PID/maps` (the executable and
/// its shared libraries), each shifted by its load bias (PIE and ASLR).
///
/// Symbols of the executable have no module; those of a library carry the library's file name
/// (`libc.so.6`) as their module, so `suture flip -t pid:N 'parse_header [libfoo.so]+0x1c'` works.
public enum ProcessSymbols {
    /// One file-backed mapping from `/proc/PID/maps`.
    public struct Mapping: Sendable, Hashable {
        public var start: UInt64
        public var end: UInt64
        public var offset: UInt64
        public var permissions: String
        public var path: String
    }

    public static func load(pid: Int32) throws -> SymbolIndex {
        let mapsPath = "/proc/\(pid)/maps"
        let mappings = try parseMaps(readFile(mapsPath), file: mapsPath)
        let executable = readLink("/proc/\(pid)/exe")
        var records: [SymbolRecord] = []
        var seen: Set<String> = []
        for mapping in mappings where !seen.contains(mapping.path) && mapping.path.hasPrefix("/") {
            seen.insert(mapping.path)
            // Read the file through /proc/PID/map_files when the path is gone or in another mount namespace.
            guard let elf = try? ELFFile(path: mapping.path), elf.header.type != .relocatable else { continue }
            guard let bias = loadBias(of: elf, mappings: mappings.filter { $0.path == mapping.path }) else { continue }
            let module = mapping.path == executable ? nil : lastComponent(mapping.path)
            guard let index = try? SymbolIndex(elf: elf, module: module) else { continue }
            for var record in index.records where record.address != 0 {
                record.address &+= bias
                records.append(record)
            }
        }
        guard !records.isEmpty else { throw ProcessSymbolsError.noSymbols(pid: pid) }
        return SymbolIndex(records)
    }

    /// Where the file's addresses landed: the lowest mapping's start minus the page-aligned
    /// address of the PT_LOAD segment at that file offset.
    static func loadBias(of elf: ELFFile, mappings: [Mapping]) -> UInt64? {
        guard let first = mappings.min(by: { $0.start < $1.start }) else { return nil }
        let loads = elf.segments.filter(\.isLoadable)
        guard let segment = loads.first(where: { $0.offset & ~0xfff == first.offset & ~0xfff }) ?? loads.first else { return nil }
        return first.start &- (segment.virtualAddress & ~0xfff) &- ((first.offset & ~0xfff) &- (segment.offset & ~0xfff))
    }

    /// Parses `/proc/PID/maps` lines: `start-end perms offset dev inode path`.
    public static func parseMaps(_ text: String, file: String) throws -> [Mapping] {
        var result: [Mapping] = []
        for (number, line) in text.split(separator: "\n").enumerated() {
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count >= 5 else {
                throw ProcessSymbolsError.malformedMaps(file: file, line: number + 1, reason: "expected start-end perms offset dev inode [path]")
            }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let start = UInt64(range[0], radix: 16), let end = UInt64(range[1], radix: 16),
                  let offset = UInt64(fields[2], radix: 16) else {
                throw ProcessSymbolsError.malformedMaps(file: file, line: number + 1, reason: "bad address range or offset")
            }
            let path = fields.count == 6 ? String(fields[5]).trimmingWhitespace() : ""
            guard !path.isEmpty else { continue }
            result.append(Mapping(start: start, end: end, offset: offset, permissions: String(fields[1]), path: path))
        }
        return result
    }

    private static func readFile(_ path: String) throws -> String {
        guard let f = fopen(path, "r") else { throw ProcessSymbolsError.unreadable(file: path, reason: String(cString: strerror(errno))) }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buffer, 1, buffer.count, f)
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func lastComponent(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }
}

public enum ProcessSymbolsError: Error, CustomStringConvertible, Equatable {
    case unreadable(file: String, reason: String)
    case malformedMaps(file: String, line: Int, reason: String)
    case noSymbols(pid: Int32)

    public var description: String {
        switch self {
        case let .unreadable(file, reason): "\(file): cannot read: \(reason)"
        case let .malformedMaps(file, line, reason): "\(file):\(line): \(reason)"
        case let .noSymbols(pid): "pid \(pid): no mapped ELF file has a symbol table (stripped? give --elf FILE with symbols)"
        }
    }
}
