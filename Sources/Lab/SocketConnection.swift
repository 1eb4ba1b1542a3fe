import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A connected stream socket (unix or TCP) with deadline-bounded reads; closed in deinit.
final class SocketConnection {
    let fd: Int32
    let name: String
    private var scratch = [UInt8](repeating: 0, count: 65536)

    private init(fd: Int32, name: String) {
        self.fd = fd
        self.name = name
    }

    deinit {
        close(fd)
    }

    enum ConnectFailure: Error {
        case notListening(errno: Int32)     // no socket file yet, or nobody accepting
        case failed(LabError)
    }

    /// One connection attempt to a unix socket.
    static func connectUnix(_ path: String) -> Result<SocketConnection, ConnectFailure> {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else {
            return .failure(.failed(.socketPathTooLong(path: path, limit: capacity - 1)))
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(.failed(.io(path: path, operation: "socket", errno: errno))) }
        let result = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if result != 0 {
            let code = errno
            close(fd)
            if code == ENOENT || code == ECONNREFUSED || code == EAGAIN {
                return .failure(.notListening(errno: code))
            }
            return .failure(.failed(.io(path: path, operation: "connect", errno: code)))
        }
        return .success(SocketConnection(fd: fd, name: path))
    }

    /// Connects to a unix socket, retrying while it does not exist yet or refuses, up to `timeout`.
    /// `keepTrying` is asked between attempts (e.g. "is QEMU still alive?").
    static func connectUnix(_ path: String, timeout: Double,
                            keepTrying: () -> Bool = { true }) throws(LabError) -> SocketConnection {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            switch connectUnix(path) {
            case .success(let connection):
                return connection
            case .failure(.failed(let error)):
                throw error
            case .failure(.notListening(let code)):
                if Date() >= deadline || !keepTrying() {
                    throw .io(path: path, operation: "connect", errno: code)
                }
                usleep(20_000)
            }
        }
    }

    /// Waits up to `timeout` seconds for data and reads what is there into `buffer`.
    /// Returns the byte count, 0 at end of stream, nil when the time ran out.
    func read(into buffer: inout [UInt8], timeout: Double) throws(LabError) -> Int? {
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        // Round up: a deadline 0.4 ms away must not turn into a zero-timeout poll that spins.
        let milliseconds = Int32((max(0, min(timeout, 3600)) * 1000).rounded(.up))
        while true {
            let ready = poll(&descriptor, 1, milliseconds)
            if ready < 0 {
                if errno == EINTR { continue }
                throw .io(path: name, operation: "poll", errno: errno)
            }
            if ready == 0 { return nil }
            break
        }
        while true {
            let n = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == ECONNRESET { return 0 }
                throw .io(path: name, operation: "read", errno: errno)
            }
            buffer.append(contentsOf: scratch[0..<n])
            return n
        }
    }

    /// Writes every byte; MSG_NOSIGNAL so a peer that went away is an error, not a SIGPIPE.
    func write(_ bytes: [UInt8]) throws(LabError) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + done, $0.count - done, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(path: name, operation: "write", errno: errno)
            }
            done += n
        }
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
    /// Another program may still take it before QEMU binds it: `LabVM.up` retries then.
    static func freeLoopbackPort() throws(LabError) -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .io(path: "127.0.0.1:0", operation: "socket", errno: errno) }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bind(fd, socketAddress, length) == 0 ? getsockname(fd, socketAddress, &length) : -1
            }
        }
        guard bound == 0 else { throw .io(path: "127.0.0.1:0", operation: "bind", errno: errno) }
        return UInt16(bigEndian: address.sin_port)
    }
}
