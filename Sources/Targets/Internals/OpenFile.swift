import ELF
import Glibc

/// An open descriptor on a file or device, closed in deinit. Reads and writes go through `Syscalls`
/// so EINTR and short transfers are handled (and testable) in one place.
final class OpenFile: @unchecked Sendable {
    let path: String
    let fd: Int32
    let writable: Bool
    let syscalls: Syscalls
    /// The name errors carry (`kmem:/dev/kmem`).
    let targetName: String

    enum Access {
        case readOnly
        case readWrite
        /// Read-write when permitted, else read-only (then `writable` is false).
        case readWriteIfPermitted
    }

    init(path: String, access: Access, targetName: String, syscalls: Syscalls) throws(TargetError) {
        self.path = path
        self.targetName = targetName
        self.syscalls = syscalls
        if access != .readOnly {
            do {
                fd = try syscalls.open(path, flags: O_RDWR)
                writable = true
                return
            } catch {
                if access == .readWrite { throw .system(targetName, "open \(path) for writing", error) }
            }
        }
        do {
            fd = try syscalls.open(path, flags: O_RDONLY)
        } catch {
            throw .system(targetName, "open \(path)", error)
        }
        writable = false
    }

    deinit { syscalls.close(fd) }

    /// Reads exactly `count` bytes at file offset `offset` (the raw 64-bit pattern, so device files
    /// with unsigned offsets work). `address` is what the caller asked for, for messages.
    func read(offset: UInt64, count: Int, address: UInt64) throws(TargetError) -> [UInt8] {
        guard count > 0 else { return [] }
        // Zero-filling costs far less than the system call and keeps the array initialized.
        var bytes = [UInt8](repeating: 0, count: count)
        let result: Result<Int, SystemCallError> = bytes.withUnsafeMutableBytes { buffer in
            do throws(SystemCallError) { return .success(try syscalls.preadFully(fd, into: buffer, offset: offset)) }
            catch { return .failure(error) }
        }
        switch result {
        case .failure(let error):
            if error.code == EIO || error.code == EFAULT || error.code == ENXIO {
                throw .unmappedAddress(target: targetName, address: address, count: count,
                                       detail: "\(error) at file offset \(Hex.address(offset))")
            }
            throw .system(targetName, "read \(count) byte(s) at \(Hex.address(address))", error)
        case .success(let n) where n < count:
            throw .shortTransfer(target: targetName, operation: "read (end of \(path))", address: address,
                                 expected: count, transferred: n)
        case .success:
            return bytes
        }
    }

    /// Writes all of `bytes` at file offset `offset`.
    func write(offset: UInt64, bytes: [UInt8], address: UInt64) throws(TargetError) {
        guard writable else {
            throw .notSupported(target: targetName, operation: "write", reason: "\(path) could not be opened for writing")
        }
        let outcome: Result<Int, SystemCallError> = bytes.withUnsafeBytes { raw in
            do throws(SystemCallError) { return .success(try syscalls.pwriteFully(fd, raw, offset: offset)) }
            catch { return .failure(error) }
        }
        switch outcome {
        case .failure(let error):
            if error.code == EIO || error.code == EFAULT || error.code == ENXIO {
                throw .unmappedAddress(target: targetName, address: address, count: bytes.count,
                                       detail: "\(error) at file offset \(Hex.address(offset))")
            }
            throw .system(targetName, "write \(bytes.count) byte(s) at \(Hex.address(address))", error)
        case .success(let n) where n < bytes.count:
            throw .shortTransfer(target: targetName, operation: "write (no progress)", address: address,
                                 expected: bytes.count, transferred: n)
        case .success:
            return
        }
    }

    func sync() throws(TargetError) {
        do { try syscalls.fsync(fd) } catch { throw .system(targetName, "fsync \(path)", error) }
    }
}

