import ELF
import Glibc

/// An ELF file on disk (executable, shared object, kernel module) as memory: addresses go through
/// PT_LOAD segments (else through allocated sections' addresses). Writes go to the file with
/// pwrite and are flushed with fsync before `write` returns.
///
/// The file stays open read-only; each write opens it for writing and closes it again, so the
/// target never keeps an executable from being run (exec refuses files open for writing with
/// ETXTBSY, and a write to the file of a running program is refused the same way).
///
/// Relocatable objects (`.o`, `.ko`) have no segments and every section at address 0, so each
/// allocated section is given its file offset as address: `sectionAddress(named: ".text")` plus a
/// symbol's section-relative value is where that symbol's bytes are read and written.
public final class FileTarget: MemoryTarget, @unchecked Sendable {
    public let name: String
    public let path: String
    public let capabilities: TargetCapabilities
    /// The file as the ELF module reads it (sections, segments, symbols).
    public let elf: ELFFile
    private let map: SegmentMap
    private let lock = Lock()
    private let syscalls: Syscalls
    private var file: OpenFile?

    public convenience init(path: String) throws {
        try self.init(path: path, syscalls: Syscalls())
    }

    init(path: String, syscalls: Syscalls) throws(TargetError) {
        self.path = path
        self.name = TargetSpec.file(path: path).description
        self.syscalls = syscalls
        do { elf = try ELFFile(path: path) } catch { throw .elf(error) }
        map = SegmentMap(elf.segments)
        self.file = try OpenFile(path: path, access: .readOnly, targetName: name, syscalls: syscalls)
        // A compressed module (.ko.xz) is read through its decompressed image; offsets into that
        // image are not offsets into the file, so it cannot be written in place.
        capabilities = elf.compression == nil && access(path, W_OK) == 0 ? [.write] : []
    }

    /// The address at which a section's bytes appear in this target (for relocatable files, its
    /// file offset; otherwise its sh_addr). Nil when there is no such section with file contents.
    public func sectionAddress(named name: String) -> UInt64? {
        guard let section = elf.section(named: name) else { return nil }
        return isRelocatable ? section.offset : section.address
    }

    private var isRelocatable: Bool { elf.header.type == .relocatable }

    public func identity() throws -> TargetIdentity {
        do {
            return TargetIdentity(kind: .file, buildID: try elf.buildID().map { Hex.bytes($0, separator: "") }, path: path)
        } catch {
            throw TargetError.elf(error)
        }
    }

    public func read(at address: UInt64, count: Int) throws -> [UInt8] {
        try lock.withLock { () throws(TargetError) -> [UInt8] in
            let file = try open()
            guard count > 0 else { return [] }
            let offset = try fileOffset(of: address, count: count)
            if elf.compression != nil {
                // The decompressed image in memory: its offsets are the ones the headers give.
                let contents = elf.contents
                guard offset <= UInt64(contents.count), UInt64(count) <= UInt64(contents.count) - offset else {
                    throw TargetError.shortTransfer(target: name, operation: "read (end of the decompressed image)",
                                                    address: address, expected: count, transferred: 0)
                }
                return Array(contents[Int(offset)..<Int(offset) + count])
            }
            return try file.read(offset: offset, count: count, address: address)
        }
    }

    public func write(at address: UInt64, bytes: [UInt8]) throws {
        try lock.withLock { () throws(TargetError) in
            _ = try open()
            guard !bytes.isEmpty else { return }
            if let compression = elf.compression {
                throw TargetError.notSupported(target: name, operation: "write",
                                               reason: "the file is \(compression)-compressed; decompress it and patch the plain file")
            }
            let offset = try fileOffset(of: address, count: bytes.count)
            let writable = try OpenFile(path: path, access: .readWrite, targetName: name, syscalls: syscalls)
            try writable.write(offset: offset, bytes: bytes, address: address)
            try writable.sync()
        }
    }

    public func stop() throws {
        throw TargetError.notSupported(target: name, operation: "stop", reason: "a file does not run")
    }

    public func resume() throws {}

    public func programCounters() throws -> [ExecutionContext] {
        throw TargetError.notSupported(target: name, operation: "programCounters", reason: "a file does not run")
    }

    public func close() { lock.withLock { file = nil } }

    private func open() throws(TargetError) -> OpenFile {
        guard let file else { throw .notSupported(target: name, operation: "use after close()", reason: "the target is closed") }
        return file
    }

    /// One contiguous file range for the whole access: patches never straddle segments.
    private func fileOffset(of address: UInt64, count: Int) throws(TargetError) -> UInt64 {
        let end = address &+ UInt64(count)
        if !isRelocatable, let ranges = map.fileRanges(address: address, count: count) {
            // Contiguous in the file too (segments may abut in memory but not in the file).
            var expected = ranges[0].offset
            for range in ranges {
                guard range.offset == expected else { break }
                expected += UInt64(range.length)
            }
            if expected == ranges[0].offset + UInt64(count) { return ranges[0].offset }
        }
        for section in elf.sections where section.isAllocated && section.hasFileData && section.size > 0 {
            let start = isRelocatable ? section.offset : section.address
            if address >= start, end <= start &+ section.size, end >= address {
                return section.offset + (address - start)
            }
        }
        throw .unmappedAddress(target: name, address: address, count: count,
                               detail: isRelocatable
                                   ? "in no allocated section of \(path) (relocatable: a section's address is its file offset)"
                                   : "in no PT_LOAD segment's file image or allocated section of \(path)")
    }
}
