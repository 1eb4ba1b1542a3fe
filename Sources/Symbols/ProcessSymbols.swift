import ELF
#if canImport(Glibc)
import Glibc
#endif

/// The symbols of a running process: every ELF file mapped in `/proc/PID/maps` (the executable and
/// its shared libraries), each shifted by its load bias (PIE and ASLR).
///
/// Symbols of the executable have no module; those of a library carry the library's file name
/// (`libc.so.6`) as their module, so `suture flip -t pid:N 'libfoo.so:parse_header+0x1c'` (or
/// `'parse_header [libfoo.so]+0x1c'`) works.
///
/// Where an image's symbols come from, best first: a file the caller gives (`--elf`, a debug build
/// of the same build-id), the mapped file's own `.symtab`, a separate debug file found through the
/// build-id (`/usr/lib/debug/.build-id/ab/cdef….debug`), else the mapped file's `.dynsym` alone
/// (a stripped binary: only exported names; `Snapshot.notes` says so).
public enum ProcessSymbols {
    /// One line of `/proc/PID/maps`.
    public struct Mapping: Sendable, Hashable {
        public var start: UInt64
        public var end: UInt64
        public var offset: UInt64
        /// `r-xp`, `r--p`, `rw-p`.
        public var permissions: String
        /// The file's inode (0 for anonymous mappings).
        public var inode: UInt64 = 0
        /// The mapped file's path, without the kernel's ` (deleted)` suffix; empty for anonymous
        /// memory, `[heap]`, `[stack]`, `[vdso]` for the kernel's own.
        public var path: String
        /// The file was deleted or replaced since it was mapped (an upgraded daemon's old binary).
        public var isDeleted: Bool = false

        public var isExecutable: Bool { permissions.dropFirst(2).first == "x" }
        public var isWritable: Bool { permissions.dropFirst(1).first == "w" }
        public var isFile: Bool { path.hasPrefix("/") }
        public var range: Range<UInt64> { start..<end }

        public init(start: UInt64, end: UInt64, offset: UInt64, permissions: String, inode: UInt64 = 0,
                    path: String, isDeleted: Bool = false) {
            self.start = start
            self.end = end
            self.offset = offset
            self.permissions = permissions
            self.inode = inode
            self.path = path
            self.isDeleted = isDeleted
        }
    }

    /// Where an image's symbols were read from.
    public enum SymbolSource: Sendable, Hashable, CustomStringConvertible {
        /// A file the caller gave (`--elf`).
        case given(path: String)
        /// The mapped file's own `.symtab`.
        case symtab
        /// A separate debug file found through the build-id.
        case debugFile(path: String)
        /// Only `.dynsym`: the file is stripped.
        case dynamicOnly
        /// The file could not be read as ELF.
        case unreadable(reason: String)

        public var description: String {
            switch self {
            case let .given(path): "symbols from \(path)"
            case .symtab: ".symtab"
            case let .debugFile(path): "debug file \(path)"
            case .dynamicOnly: "stripped: .dynsym only"
            case let .unreadable(reason): "unreadable: \(reason)"
            }
        }
    }

    /// One ELF file mapped into the process.
    public struct Image: Sendable, Hashable {
        /// The path as `/proc/PID/maps` shows it.
        public var path: String
        /// nil for the executable, else the file name (`libc.so.6`).
        public var module: String?
        public var isMainExecutable: Bool
        /// Runtime address minus link-time address.
        public var bias: UInt64
        /// GNU build-id in lowercase hex.
        public var buildID: String?
        public var mappings: [Mapping]
        public var source: SymbolSource
        /// How many symbols were loaded for it.
        public var symbolCount: Int

        public init(path: String, module: String?, isMainExecutable: Bool, bias: UInt64, buildID: String?,
                    mappings: [Mapping], source: SymbolSource, symbolCount: Int) {
            self.path = path
            self.module = module
            self.isMainExecutable = isMainExecutable
            self.bias = bias
            self.buildID = buildID
            self.mappings = mappings
            self.source = source
            self.symbolCount = symbolCount
        }

        /// Where `file.so` was, for messages: `libc.so.6` or the executable's path.
        public var displayName: String { module ?? path }

        /// The runtime address of a link-time (file) address.
        public func runtimeAddress(ofFileAddress address: UInt64) -> UInt64 { address &+ bias }

        public func contains(_ address: UInt64) -> Bool { mappings.contains { $0.range.contains(address) } }
    }

    public struct Options: Sendable {
        /// ELF files with symbols for mapped images (`--elf`): each applies to the mapped image with
        /// the same build-id; a file without a build-id applies to the executable.
        public var symbolFiles: [String]
        /// Roots searched for `.build-id/ab/cdef….debug`.
        public var debugDirectories: [String]

        public init(symbolFiles: [String] = [], debugDirectories: [String] = ["/usr/lib/debug"]) {
            self.symbolFiles = symbolFiles
            self.debugDirectories = debugDirectories
        }
    }

    /// The process' images and their symbols, at one moment.
    public struct Snapshot: Sendable {
        public var pid: Int32
        public var images: [Image]
        public var index: SymbolIndex
        /// What the user should know: a stripped executable, a symbol file used, libraries without symbols.
        public var notes: [String]

        public var executable: Image? { images.first(where: \.isMainExecutable) }

        /// The image whose mappings hold `address`.
        public func image(containing address: UInt64) -> Image? { images.first { $0.contains(address) } }

        /// The image with this GNU build-id (lowercase hex).
        public func image(buildID: String) -> Image? { images.first { $0.buildID == buildID.lowercased() } }
    }

    /// The symbol index of the live process `pid` (see `snapshot` for the details behind it).
    public static func load(pid: Int32) throws -> SymbolIndex {
        try snapshot(pid: pid).index
    }

    /// Reads `/proc/PID/maps`, opens every mapped ELF file, computes its load bias and loads its
    /// symbols. Throws when no image yields a symbol.
    public static func snapshot(pid: Int32, options: Options = Options()) throws -> Snapshot {
        var snapshot = try images(pid: pid, readingSymbols: true, options: options)
        guard snapshot.index.count > 0 else {
            throw ProcessSymbolsError.noSymbols(pid: pid, executable: snapshot.executable?.path)
        }
        snapshot.notes.sort()
        return snapshot
    }

    /// The images without their symbols (cheap: build-ids and biases only), for identity checks.
    public static func images(pid: Int32) throws -> [Image] {
        try images(pid: pid, readingSymbols: false, options: Options()).images
    }

    private static func images(pid: Int32, readingSymbols: Bool, options: Options) throws -> Snapshot {
        let mapsPath = "/proc/\(pid)/maps"
        let text: String
        do { text = try readFile(mapsPath) } catch {
            if access("/proc/\(pid)", F_OK) != 0 { throw ProcessSymbolsError.noSuchProcess(pid: pid) }
            throw error
        }
        let mappings = try parseMaps(text, file: mapsPath)
        let executable = readLink("/proc/\(pid)/exe").map(stripDeleted)

        // The caller's symbol files, by build-id (nil: no build-id, meant for the executable).
        var given: [(file: ELFFile, buildID: String?)] = []
        for path in options.symbolFiles {
            let file: ELFFile
            do { file = try ELFFile(path: path) } catch {
                throw ProcessSymbolsError.unreadable(file: path, reason: "\(error)")
            }
            given.append((file, buildIDText(file)))
        }
        var usedGiven = Set<Int>()

        var images: [Image] = []
        var records: [SymbolRecord] = []
        var notes: [String] = []
        var order: [String] = []
        var byPath: [String: [Mapping]] = [:]
        for mapping in mappings where mapping.isFile {
            if byPath[mapping.path] == nil { order.append(mapping.path) }
            byPath[mapping.path, default: []].append(mapping)
        }
        for path in order {
            let group = byPath[path]!.sorted { $0.start < $1.start }
            // Data files mapped into memory (locale archives, caches) are not ELF: skip them.
            guard let elf = openMapped(pid: pid, group: group), elf.header.type == .executable || elf.header.type == .sharedObject,
                  let bias = loadBias(of: elf, mappings: group) else { continue }
            let isMain = path == executable
            let module = isMain ? nil : lastComponent(path)
            let buildID = buildIDText(elf)
            var image = Image(path: path, module: module, isMainExecutable: isMain, bias: bias, buildID: buildID,
                              mappings: group, source: .dynamicOnly, symbolCount: 0)
            if readingSymbols {
                // Pick the symbol file: a given one with this build-id (or, lacking a build-id, the
                // executable's), else the file itself, else its debug file.
                var source: (elf: ELFFile, source: SymbolSource)?
                if let k = given.indices.first(where: { !usedGiven.contains($0) && given[$0].buildID != nil && given[$0].buildID == buildID })
                    ?? (isMain ? given.indices.first(where: { !usedGiven.contains($0) && given[$0].buildID == nil }) : nil) {
                    usedGiven.insert(k)
                    source = (given[k].file, .given(path: given[k].file.path))
                    if given[k].buildID == nil {
                        notes.append("\(given[k].file.path) has no build-id: its symbols are taken as the executable's (\(path)) unchecked")
                    }
                } else if ((try? elf.symbols()) ?? []).isEmpty == false {
                    source = (elf, .symtab)
                } else if let buildID, let debug = debugFile(buildID: buildID, directories: options.debugDirectories) {
                    source = (debug.elf, .debugFile(path: debug.path))
                }
                let chosen = source ?? (elf, .dynamicOnly)
                image.source = chosen.source
                let loaded = shiftedRecords(of: chosen.elf, module: module, bias: bias)
                image.symbolCount = loaded.count
                records += loaded
                if case .dynamicOnly = chosen.source, isMain {
                    notes.append(strippedNote(path: path, buildID: buildID, dynamic: loaded.count, directories: options.debugDirectories))
                }
            }
            images.append(image)
        }
        if readingSymbols {
            let stripped = images.filter { !$0.isMainExecutable && $0.source == .dynamicOnly }
            if !stripped.isEmpty {
                notes.append("\(stripped.count) of \(images.count - 1) libraries are stripped (exported symbols only): "
                             + stripped.prefix(6).map(\.displayName).joined(separator: ", ") + (stripped.count > 6 ? ", …" : ""))
            }
            for (k, g) in given.enumerated() where !usedGiven.contains(k) {
                throw ProcessSymbolsError.symbolFileMismatch(
                    file: g.file.path, buildID: g.buildID ?? "none",
                    mapped: images.map { "\($0.displayName) \($0.buildID ?? "no build-id")" })
            }
        }
        return Snapshot(pid: pid, images: images, index: SymbolIndex(records), notes: notes)
    }

    /// Every defined symbol of `elf`, shifted by `bias`. Absolute symbols are numbers and TLS
    /// symbols offsets into a thread's block: neither moves with the image, so both are left out.
    static func shiftedRecords(of elf: ELFFile, module: String?, bias: UInt64) -> [SymbolRecord] {
        guard let index = try? SymbolIndex(elf: elf, module: module) else { return [] }
        var tls = Set<String>()
        for symbol in ((try? elf.symbols()) ?? []) + ((try? elf.dynamicSymbols()) ?? []) where symbol.type == .tls {
            tls.insert(symbol.name)
        }
        var result: [SymbolRecord] = []
        result.reserveCapacity(index.records.count)
        for var record in index.records where record.address != 0 && !record.isAbsolute && !tls.contains(record.name) {
            record.address &+= bias
            result.append(record)
        }
        return result
    }

    /// Where the file's addresses landed: a mapping at file offset O starting at S holds the bytes
    /// of the PT_LOAD segment covering O, whose link-time address there is p_vaddr - p_offset + O
    /// (the kernel maps p_vaddr and p_offset congruent modulo the page size). The lowest mapping
    /// decides: with old layouts, text and data share a file page and both map offset 0.
    public static func loadBias(of elf: ELFFile, mappings: [Mapping]) -> UInt64? {
        let loads = elf.segments.filter(\.isLoadable)
        let page = UInt64(max(4096, sysconf(Int32(_SC_PAGESIZE))))
        func bias(_ m: Mapping) -> UInt64? {
            guard let segment = loads.first(where: {
                m.offset >= $0.offset & ~(page - 1) && m.offset < $0.offset + max($0.fileSize, 1)
            }) else { return nil }
            return m.start &- (segment.virtualAddress &- segment.offset &+ m.offset)
        }
        guard let first = mappings.min(by: { $0.start < $1.start }) else { return nil }
        return bias(first)
    }

    /// Parses `/proc/PID/maps` lines (`start-end perms offset dev inode [path]`) into the
    /// file-backed mappings; `includeAnonymous` keeps the others too (heap, stack, anonymous).
    public static func parseMaps(_ text: String, file: String, includeAnonymous: Bool = false) throws -> [Mapping] {
        var result: [Mapping] = []
        for (number, line) in text.split(separator: "\n").enumerated() {
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count >= 5 else {
                throw ProcessSymbolsError.malformedMaps(file: file, line: number + 1, reason: "expected start-end perms offset dev inode [path], found \"\(line)\"")
            }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let start = UInt64(range[0], radix: 16), let end = UInt64(range[1], radix: 16), start <= end,
                  let offset = UInt64(fields[2], radix: 16), let inode = UInt64(fields[4]) else {
                throw ProcessSymbolsError.malformedMaps(file: file, line: number + 1, reason: "bad address range, offset or inode in \"\(line)\"")
            }
            var path = fields.count == 6 ? String(fields[5]).trimmingWhitespace() : ""
            guard includeAnonymous || path.hasPrefix("/") else { continue }
            let deleted = path.hasPrefix("/") && path.hasSuffix(" (deleted)")
            if deleted { path = stripDeleted(path) }
            result.append(Mapping(start: start, end: end, offset: offset, permissions: String(fields[1]), inode: inode,
                                  path: path, isDeleted: deleted))
        }
        return result
    }

    /// Every mapping of the process, anonymous ones included.
    public static func mappings(pid: Int32) throws -> [Mapping] {
        let path = "/proc/\(pid)/maps"
        return try parseMaps(readFile(path), file: path, includeAnonymous: true)
    }

    // MARK: Finding data

    /// One place where searched bytes lie in a mapped file's read-only data.
    public struct Occurrence: Sendable, Hashable {
        /// The live address.
        public var address: UInt64
        /// The image's module (nil: the executable) and path.
        public var module: String?
        public var path: String
        /// The section (`.rodata`) and the offset into it.
        public var section: String
        public var sectionOffset: UInt64
    }

    /// Where `bytes` occur in the allocated, read-only, non-executable sections (`.rodata`, ...) of
    /// the process' mapped files, at live addresses: to find a string to patch in a stripped
    /// daemon. At most `limit` occurrences.
    public static func occurrences(of bytes: [UInt8], pid: Int32, images: [Image], limit: Int = 64) -> [Occurrence] {
        guard !bytes.isEmpty else { return [] }
        var found: [Occurrence] = []
        for image in images {
            guard let elf = openMapped(pid: pid, group: image.mappings.isEmpty ? [] : image.mappings) else { continue }
            for section in elf.sections where section.isAllocated && !section.isExecutable && !section.isWritable
                && section.type != ELFConstants.SHT_NOBITS && section.size >= bytes.count {
                guard let data = try? elf.data(of: section) else { continue }
                let hits: [Int] = data.withUnsafeBytes { raw in
                    var hits: [Int] = []
                    guard raw.count >= bytes.count else { return hits }
                    let first = bytes[0]
                    var k = 0
                    while k <= raw.count - bytes.count {
                        if raw[k] == first, bytes.indices.allSatisfy({ raw[k + $0] == bytes[$0] }) { hits.append(k) }
                        k += 1
                    }
                    return hits
                }
                for k in hits {
                    found.append(Occurrence(address: image.runtimeAddress(ofFileAddress: section.address + UInt64(k)), module: image.module,
                                            path: image.path, section: section.name, sectionOffset: UInt64(k)))
                    if found.count >= limit { return found }
                }
            }
        }
        return found
    }

    // MARK: Files

    /// The mapped file itself: by its path when that still names the same inode, else through
    /// `/proc/PID/map_files/START-END` (a deleted or replaced file, another mount namespace).
    private static func openMapped(pid: Int32, group: [Mapping]) -> ELFFile? {
        guard let first = group.first else { return nil }
        var info = stat()
        if !first.isDeleted, stat(first.path, &info) == 0, UInt64(info.st_ino) == first.inode || first.inode == 0,
           let elf = try? ELFFile(path: first.path) {
            return elf
        }
        let viaProc = "/proc/\(pid)/map_files/\(String(first.start, radix: 16))-\(String(first.end, radix: 16))"
        return try? ELFFile(path: viaProc)
    }

    /// `/usr/lib/debug/.build-id/ab/cdef….debug` whose own build-id matches.
    static func debugFile(buildID: String, directories: [String]) -> (path: String, elf: ELFFile)? {
        guard buildID.count > 2 else { return nil }
        let name = ".build-id/" + buildID.prefix(2) + "/" + buildID.dropFirst(2) + ".debug"
        for directory in directories {
            let path = directory + "/" + name
            guard access(path, R_OK) == 0, let elf = try? ELFFile(path: path), buildIDText(elf) == buildID else { continue }
            return (path, elf)
        }
        return nil
    }

    static func buildIDText(_ elf: ELFFile) -> String? {
        guard let bytes = (try? elf.buildID()).flatMap({ $0 }), !bytes.isEmpty else { return nil }
        return Hex.bytes(bytes, separator: "")
    }

    static func strippedNote(path: String, buildID: String?, dynamic: Int, directories: [String]) -> String {
        var text = "\(path) is stripped: only its \(dynamic) dynamic (exported) symbols are known"
        if let buildID, let root = directories.first {
            text += "; give --elf FILE with its symbols (an unstripped copy of the same build), or install its debug file "
                + "\(root)/.build-id/\(buildID.prefix(2))/\(buildID.dropFirst(2)).debug"
        } else {
            text += "; give --elf FILE with its symbols (an unstripped copy of the same build)"
        }
        return text
    }

    private static func readFile(_ path: String) throws -> String {
        guard let f = fopen(path, "r") else { throw ProcessSymbolsError.unreadable(file: path, reason: String(cString: strerror(errno))) }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buffer, 1, buffer.count, f)
            if n <= 0 { break }
            bytes.append(contentsOf: buffer[0..<n])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func stripDeleted(_ path: String) -> String {
        path.hasSuffix(" (deleted)") ? String(path.dropLast(10)) : path
    }

    private static func lastComponent(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }
}

public enum ProcessSymbolsError: Error, CustomStringConvertible, Equatable {
    case unreadable(file: String, reason: String)
    case malformedMaps(file: String, line: Int, reason: String)
    case noSuchProcess(pid: Int32)
    case noSymbols(pid: Int32, executable: String?)
    /// A `--elf` file matches no mapped image's build-id.
    case symbolFileMismatch(file: String, buildID: String, mapped: [String])

    public var description: String {
        switch self {
        case let .unreadable(file, reason): "\(file): cannot read: \(reason)"
        case let .malformedMaps(file, line, reason): "\(file):\(line): \(reason)"
        case let .noSuchProcess(pid): "pid \(pid): no such process"
        case let .noSymbols(pid, executable):
            "pid \(pid)\(executable.map { " (\($0))" } ?? ""): no mapped ELF file has a symbol (stripped, static?): give --elf FILE with symbols"
        case let .symbolFileMismatch(file, buildID, mapped):
            "\(file): build-id \(buildID) is not that of any file mapped in the process (a different build?); mapped: "
                + mapped.prefix(8).joined(separator: ", ") + (mapped.count > 8 ? ", …" : "")
        }
    }
}
