import ELF

/// /dev/mem: physical memory as a file. Kernel virtual addresses are translated the way x86-64
/// maps them:
/// - kernel image (0xffffffff80000000 ≤ virt < 0xffffffffc0000000, the module area's start):
///   phys = virt − __START_KERNEL_map + phys_base
/// - direct map (≥ `page_offset_base`): phys = virt − page_offset_base
///
/// `phys_base` is where the kernel was loaded physically minus where it was linked to run; read it
/// from /proc/iomem's "Kernel code" line with `physBase(iomem:textAddress:)`, or from the lab's
/// gdbstub. `page_offset_base` is given, or read from its variable once `phys_base` is known.
///
/// It cannot stop the CPUs, so the engine restricts it to single naturally-aligned stores.
public final class DevMemTarget: MemoryTarget, @unchecked Sendable {
    public let name: String
    public let path: String
    public var capabilities: TargetCapabilities { memory.capabilities }
    public let physBase: UInt64
    public let pageOffsetBase: UInt64?
    private let kernel: KernelSymbols?
    private let memory: MemoryDeviceFile

    /// The direct map covers at most 64 TiB with 4-level paging (the largest x86-64 layout).
    static let directMapSize: UInt64 = 1 << 46

    /// - Parameters:
    ///   - physBase: the value of `phys_base`.
    ///   - pageOffsetBase: the value of `page_offset_base`; when nil and `kernel.pageOffsetBase`
    ///     (the variable's address) is known, it is read from memory.
    public convenience init(path: String = TargetSpec.defaultMemPath, physBase: UInt64, pageOffsetBase: UInt64? = nil,
                            kernel: KernelSymbols? = nil) throws {
        try self.init(path: path, physBase: physBase, pageOffsetBase: pageOffsetBase, kernel: kernel, syscalls: Syscalls())
    }

    init(path: String, physBase: UInt64, pageOffsetBase: UInt64?, kernel: KernelSymbols?, syscalls: Syscalls) throws(TargetError) {
        self.path = path
        self.name = TargetSpec.mem(path: path).description
        self.physBase = physBase
        self.kernel = kernel
        let memory = try MemoryDeviceFile(path: path, targetName: name, syscalls: syscalls)
        self.memory = memory
        if let pageOffsetBase {
            self.pageOffsetBase = pageOffsetBase
        } else if let variable = kernel?.pageOffsetBase {
            guard variable >= KernelSymbols.startKernelMap else {
                throw .unmappedAddress(target: name, address: variable, count: 8,
                                       detail: "page_offset_base's variable must lie in the kernel image (≥ 0xffffffff80000000)")
            }
            let bytes = try memory.read(offset: variable - KernelSymbols.startKernelMap &+ physBase, count: 8, address: variable)
            self.pageOffsetBase = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        } else {
            self.pageOffsetBase = nil
        }
    }

    /// `phys_base` from /proc/iomem text and the `_text` symbol's address: "Kernel code" starts at
    /// the physical address of `_text`, which the kernel image maps at
    /// `_text − __START_KERNEL_map + phys_base`.
    public static func physBase(iomem: String, textAddress: UInt64) -> UInt64? {
        for line in iomem.split(separator: "\n") where line.hasSuffix(" : Kernel code") {
            let range = line.trimmingPrefix(while: { $0 == " " }).split(separator: " ").first ?? ""
            guard let start = range.split(separator: "-").first.flatMap({ UInt64($0, radix: 16) }) else { continue }
            return start &- (textAddress &- KernelSymbols.startKernelMap)
        }
        return nil
    }

    /// The physical address of `address`, and how many bytes from there stay in the same mapping.
    func physicalAddress(of address: UInt64, count: Int) throws(TargetError) -> UInt64 {
        if address >= KernelSymbols.startKernelMap, address < KernelSymbols.modulesStart {
            return address - KernelSymbols.startKernelMap &+ physBase
        }
        if address >= KernelSymbols.modulesStart {
            throw .unmappedAddress(target: name, address: address, count: count,
                                   detail: "module memory is mapped page by page (vmalloc); its physical address is not a fixed offset")
        }
        if let base = pageOffsetBase, address >= base, address - base < Self.directMapSize {
            return address - base
        }
        let known = pageOffsetBase.map { "the direct map at \(Hex.address($0))" } ?? "the direct map (page_offset_base unknown)"
        throw .unmappedAddress(target: name, address: address, count: count,
                               detail: "neither the kernel image (≥ \(Hex.address(KernelSymbols.startKernelMap))) nor \(known)")
    }

    public func identity() throws -> TargetIdentity {
        guard let kernel else {
            throw TargetError.missingSymbol(target: name, name: "linux_banner", purpose: "the kernel's identity (no symbols given)")
        }
        return try kernel.identity(target: name) { address, count in try self.read(at: address, count: count) }
    }

    public func read(at address: UInt64, count: Int) throws -> [UInt8] {
        try memory.read(offset: try physicalAddress(of: address, count: count), count: count, address: address)
    }

    public func write(at address: UInt64, bytes: [UInt8]) throws {
        try memory.write(offset: try physicalAddress(of: address, count: bytes.count), bytes: bytes, address: address)
    }

    public func stop() throws {
        throw TargetError.notSupported(target: name, operation: "stop", reason: "/dev/mem cannot stop the CPUs (only single aligned stores are safe)")
    }

    public func resume() throws {}

    public func programCounters() throws -> [ExecutionContext] {
        throw TargetError.notSupported(target: name, operation: "programCounters", reason: "/dev/mem cannot see the CPUs")
    }

    public func close() { memory.close() }
}
