/// /dev/kmem: kernel virtual memory as a file whose offset is the virtual address (the 2007
/// article's way in; the device was removed from Linux in 5.13, and a test can lay a sparse file
/// out the same way).
///
/// It cannot stop the CPUs, so the engine restricts it to single naturally-aligned stores.
public final class KmemTarget: MemoryTarget, @unchecked Sendable {
    public let name: String
    public let path: String
    public var capabilities: TargetCapabilities { memory.capabilities }
    private let kernel: KernelSymbols?
    private let memory: MemoryDeviceFile

    /// - Parameter kernel: where `linux_banner` and the notes are, for `identity()`.
    public convenience init(path: String = TargetSpec.defaultKmemPath, kernel: KernelSymbols? = nil) throws {
        try self.init(path: path, kernel: kernel, syscalls: Syscalls())
    }

    init(path: String, kernel: KernelSymbols?, syscalls: Syscalls) throws(TargetError) {
        self.path = path
        self.name = TargetSpec.kmem(path: path).description
        self.kernel = kernel
        memory = try MemoryDeviceFile(path: path, targetName: name, syscalls: syscalls)
    }

    public func identity() throws -> TargetIdentity {
        guard let kernel else {
            throw TargetError.missingSymbol(target: name, name: "linux_banner", purpose: "the kernel's identity (no symbols given)")
        }
        return try kernel.identity(target: name) { address, count in try self.read(at: address, count: count) }
    }

    /// The file offset is the virtual address.
    public func read(at address: UInt64, count: Int) throws -> [UInt8] {
        try memory.read(offset: address, count: count, address: address)
    }

    public func write(at address: UInt64, bytes: [UInt8]) throws {
        try memory.write(offset: address, bytes: bytes, address: address)
    }

    public func stop() throws {
        throw TargetError.notSupported(target: name, operation: "stop", reason: "/dev/kmem cannot stop the CPUs (only single aligned stores are safe)")
    }

    public func resume() throws {}

    public func programCounters() throws -> [ExecutionContext] {
        throw TargetError.notSupported(target: name, operation: "programCounters", reason: "/dev/kmem cannot see the CPUs")
    }

    public func close() { memory.close() }
}
