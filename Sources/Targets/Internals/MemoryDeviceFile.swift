/// /dev/kmem or /dev/mem (or a file laid out like them): memory read and written with pread/pwrite
/// at the file offsets the target computes from an address. Opened read-write when permitted, else
/// read-only (then without the `.write` capability); one access at a time, as `close()` may come
/// from another thread; refused after `close()`.
final class MemoryDeviceFile: @unchecked Sendable {
    /// `[.write, .live]`, or `[.live]` when only reading was permitted.
    let capabilities: TargetCapabilities
    private let targetName: String
    private let lock = Lock()
    private var file: OpenFile?

    init(path: String, targetName: String, syscalls: Syscalls) throws(TargetError) {
        let file = try OpenFile(path: path, access: .readWriteIfPermitted, targetName: targetName, syscalls: syscalls)
        self.file = file
        self.targetName = targetName
        capabilities = file.writable ? [.write, .live] : [.live]
    }

    /// `count` bytes at file offset `offset`; `address` is what the caller asked for, for messages.
    func read(offset: UInt64, count: Int, address: UInt64) throws(TargetError) -> [UInt8] {
        try lock.withLock { () throws(TargetError) -> [UInt8] in
            try open().read(offset: offset, count: count, address: address)
        }
    }

    func write(offset: UInt64, bytes: [UInt8], address: UInt64) throws(TargetError) {
        try lock.withLock { () throws(TargetError) in
            try open().write(offset: offset, bytes: bytes, address: address)
        }
    }

    func close() { lock.withLock { file = nil } }

    private func open() throws(TargetError) -> OpenFile {
        guard let file else { throw .notSupported(target: targetName, operation: "use after close()", reason: "the target is closed") }
        return file
    }
}
