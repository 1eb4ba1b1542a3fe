import ELF

/// /proc/kcore, or any ELF core file: memory images in PT_LOAD segments, found by virtual address.
/// Read-only.
///
/// /proc/kcore cannot be mapped and reports a size of 128 TiB, so only its head (ELF header,
/// program headers and the notes right after them) is read, with pread, and handed to the ELF
/// module; the data is then read with pread at the offsets the segments give.
public final class KcoreTarget: MemoryTarget, @unchecked Sendable {
    public let name: String
    public let path: String
    public let capabilities: TargetCapabilities
    /// The core's head as the ELF module reads it (segments, notes).
    public let elf: ELFFile
    private let kernel: KernelSymbols?
    private let map: SegmentMap
    private let lock = Lock()
    private var file: OpenFile?

    /// Headers and notes larger than this are not a core file Suture wants to read.
    static let maximumHead: UInt64 = 16 << 20

    /// - Parameter kernel: where `linux_banner` and the notes are, for `identity()` (otherwise the
    ///   core's VMCOREINFO note is used).
    public convenience init(path: String = TargetSpec.defaultKcorePath, kernel: KernelSymbols? = nil) throws {
        try self.init(path: path, kernel: kernel, syscalls: Syscalls())
    }

    init(path: String, kernel: KernelSymbols?, syscalls: Syscalls) throws(TargetError) {
        self.path = path
        self.name = TargetSpec.kcore(path: path).description
        self.kernel = kernel
        let file = try OpenFile(path: path, access: .readOnly, targetName: name, syscalls: syscalls)
        elf = try Self.readHead(file)
        guard elf.header.type == .core else {
            throw .malformedELF(file: path, structure: "ELF header e_type", offset: 16, expected: "ET_CORE (4)",
                                found: "\(elf.header.type)")
        }
        map = SegmentMap(elf.segments)
        self.file = file
        capabilities = path.hasPrefix("/proc/") ? [.live] : []
    }

    /// Reads the ELF header, then the program headers, then everything up to the end of the
    /// PT_NOTE segments, and parses that head with the ELF module. The section table (gdb's cores
    /// have one at the very end of the file) is cut off: a core's contents are its segments.
    private static func readHead(_ file: OpenFile) throws(TargetError) -> ELFFile {
        let path = file.path
        func read(_ count: UInt64) throws(TargetError) -> [UInt8] {
            guard count <= maximumHead else {
                throw .malformedELF(file: path, structure: "ELF headers and notes", offset: 0,
                                    expected: "at most \(maximumHead) bytes", found: "\(count) bytes")
            }
            var bytes = try file.read(offset: 0, count: Int(count), address: 0)
            // e_shoff, e_shnum, e_shstrndx → 0 (offsets differ between ELF64 and ELF32).
            let is64 = bytes[4] == 2
            for i in (is64 ? 40..<48 : 32..<36) { bytes[i] = 0 }
            for i in (is64 ? [60, 61, 62, 63] : [48, 49, 50, 51]) { bytes[i] = 0 }
            return bytes
        }
        func parse(_ head: [UInt8]) throws(TargetError) -> ELFFile {
            do { return try ELFFile(bytes: head, name: path) } catch { throw .elf(error) }
        }
        let ident = try file.read(offset: 0, count: 16, address: 0)
        guard ident[0...3] == [0x7f, 0x45, 0x4c, 0x46] else {
            throw .elf(.badMagic(file: path, found: Array(ident[0..<4])))
        }
        let is64 = ident[4] == 2
        let header = try file.read(offset: 0, count: is64 ? 64 : 52, address: 0)
        func field(_ offset: Int, _ size: Int) -> UInt64 {
            (0..<size).reversed().reduce(0) { $0 << 8 | UInt64(header[offset + $1]) }
        }
        let programHeaders = is64 ? field(32, 8) : field(28, 4)
        let entrySize = field(is64 ? 54 : 42, 2), count = field(is64 ? 56 : 44, 2)
        let (end, overflow) = programHeaders.addingReportingOverflow(entrySize * count)
        guard !overflow else {
            throw .malformedELF(file: path, structure: "ELF header e_phoff", offset: is64 ? 32 : 28,
                                expected: "a program header table inside the file", found: Hex.address(programHeaders))
        }
        var head = try read(max(end, UInt64(header.count)))
        var elf = try parse(head)
        let notesEnd = elf.segments.filter { $0.type == ELFConstants.PT_NOTE }.map { $0.offset &+ $0.fileSize }.max() ?? 0
        if notesEnd > UInt64(head.count) {
            head = try read(notesEnd)
            elf = try parse(head)
        }
        return elf
    }

    /// The PT_LOAD segments' virtual address ranges (what can be read).
    public var loadedRanges: [Range<UInt64>] {
        map.loads.map { $0.virtualAddress..<($0.virtualAddress &+ $0.fileSize) }
    }

    /// The kernel's banner and build-id through the symbols when given; else the release and
    /// build-id from the VMCOREINFO note (/proc/kcore has one); else, for a process core, the file.
    public func identity() throws -> TargetIdentity {
        if let kernel {
            return try kernel.identity(target: name) { address, count in try self.read(at: address, count: count) }
        }
        let notes: [Note]
        do { notes = try elf.notes() } catch { throw TargetError.elf(error) }
        if let info = notes.first(where: { $0.name == "VMCOREINFO" }) {
            var identity = TargetIdentity(kind: .kernel, path: path)
            for line in String(decoding: info.descriptor.prefix { $0 != 0 }, as: UTF8.self).split(separator: "\n") {
                if line.hasPrefix("OSRELEASE=") { identity.release = String(line.dropFirst(10)) }
                if line.hasPrefix("BUILD-ID=") { identity.buildID = String(line.dropFirst(9)).lowercased() }
            }
            return identity
        }
        return TargetIdentity(kind: .file, path: path)
    }

    public func read(at address: UInt64, count: Int) throws -> [UInt8] {
        try lock.withLock { () throws(TargetError) -> [UInt8] in
            let file = try open()
            guard count > 0 else { return [] }
            guard let ranges = map.fileRanges(address: address, count: count) else {
                throw TargetError.unmappedAddress(target: name, address: address, count: count,
                                                  detail: "not inside the file image of any PT_LOAD segment of \(path)")
            }
            if ranges.count == 1 { return try file.read(offset: ranges[0].offset, count: count, address: address) }
            var bytes: [UInt8] = []
            bytes.reserveCapacity(count)
            var at = address
            for range in ranges {
                bytes += try file.read(offset: range.offset, count: range.length, address: at)
                at &+= UInt64(range.length)
            }
            return bytes
        }
    }

    public func write(at address: UInt64, bytes: [UInt8]) throws {
        throw TargetError.notSupported(target: name, operation: "write", reason: "a core image is read-only")
    }

    public func stop() throws {
        throw TargetError.notSupported(target: name, operation: "stop", reason: "a core image cannot stop anything")
    }

    public func resume() throws {}

    public func programCounters() throws -> [ExecutionContext] {
        throw TargetError.notSupported(target: name, operation: "programCounters", reason: "not available from a core image")
    }

    public func close() { lock.withLock { file = nil } }

    private func open() throws(TargetError) -> OpenFile {
        guard let file else { throw .notSupported(target: name, operation: "use after close()", reason: "the target is closed") }
        return file
    }
}
