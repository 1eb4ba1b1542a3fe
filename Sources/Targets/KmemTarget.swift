/// /dev/kmem: kernel virtual memory as a file whose offset is the virtual address (the 2007
/// article's way in; the device was removed from Linux in 5.13, and a test can lay a sparse file
/// out the same way).
///
/// It cannot stop the CPUs, so the engine restricts it to single naturally-aligned stores.
public final class KmemTarget: MemoryTarget, @unchecked Sendable {
    public let name: String
    public let path: String
    public let capabilities: TargetCapabilities
    private let kernel: KernelSymbols?
    private let lock = Lock()
    private var file: OpenFile?

    /// - Parameter kernel: where `linux_banner` and the notes are, for `identity()`.
    public convenience init(path: String = TargetSpec.defaultKmemPath, kernel: KernelSymbols? = nil) throws {
        try self.init(path: path, kernel: kernel, syscalls: Syscalls())
    }

    init(path: String, kernel: KernelSymbols?, syscalls: Syscalls) throws(TargetError) {
        self.path = path
        self.name = TargetSpec.kmem(path: path).description
        self.kernel = kernel
        let file = try OpenFile(path: path, access: .readWriteIfPermitted, targetName: name, syscalls: syscalls)
        self.file = file
        capabilities = file.writable ? [.write, .live] : [.live]
    }

    public func identity() throws -> TargetIdentity {
        guard let kernel else {
            throw TargetError.missingSymbol(target: name, name: "linux_banner", purpose: "the kernel's identity (no symbols given)")
        }
        return try kernel.identity(target: name) { address, count in try self.read(at: address, count: count) }
    }

    public func read(at address: UInt64, count: Int) throws -> [UInt8] {
        try lock.withLock { () throws(TargetError) -> [UInt8] in
            try open().read(offset: address, count: count, address: address)
        }
    }

    public func write(at address: UInt64, bytes: [UInt8]) throws {
        try lock.withLock { () throws(TargetError) in
            try open().write(offset: address, bytes: bytes, address: address)
        }
    }

    public func stop() throws {
        throw TargetError.notSupported(target: name, operation: "stop", reason: "/dev/kmem cannot stop the CPUs (only single aligned stores are safe)")
    }

    public func resume() throws {}

    public func programCounters() throws -> [ExecutionContext] {
        throw TargetError.notSupported(target: name, operation: "programCounters", reason: "/dev/kmem cannot see the CPUs")
    }

    public func close() { lock.withLock { file = nil } }

    private func open() throws(TargetError) -> OpenFile {
        guard let file else { throw .notSupported(target: name, operation: "use after close()", reason: "the target is closed") }
        return file
    }
}
