import ELF

/// /proc/kcore, or any ELF core file: memory images in PT_LOAD segments, found by virtual address.
/// Read-only. /proc/kcore cannot be mapped, so headers and data are read with pread.
public final class KcoreTarget: MemoryTarget, @unchecked Sendable {
    public let name: String
    public let path: String
    public let capabilities: TargetCapabilities
    private let kernel: KernelSymbols?
    private let layout: ELFLayout
    private let lock = Lock()
    private var file: OpenFile?

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
        layout = try ELFLayout.read(file)
        guard layout.type == 4 else {
            throw .malformedELF(file: path, structure: "e_type", offset: 16, expected: "4 (ET_CORE)", found: "\(layout.type)")
        }
        self.file = file
        capabilities = path.hasPrefix("/proc/") ? [.live] : []
    }

    /// The PT_LOAD segments' virtual address ranges (what can be read).
    public var loadedRanges: [Range<UInt64>] {
        layout.segments.filter { $0.type == ELFLayout.ptLoad && $0.fileSize > 0 }
            .map { $0.virtualAddress..<($0.virtualAddress &+ $0.fileSize) }
    }

    /// The kernel's banner and build-id through the symbols when given; else the release and
    /// build-id from the VMCOREINFO note (/proc/kcore has one); else, for a process core, the file.
    public func identity() throws -> TargetIdentity {
        if let kernel {
            return try kernel.identity(target: name) { address, count in try self.read(at: address, count: count) }
        }
        let notes = try lock.withLock { () throws(TargetError) -> [ELFLayout.Note] in try layout.notes(try open()) }
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
            guard let ranges = layout.fileRanges(address: address, count: count) else {
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
