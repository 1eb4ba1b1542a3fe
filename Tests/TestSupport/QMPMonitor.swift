import Foundation
import Glibc

/// A test's view of a QEMU it started with `-qmp unix:PATH,server=on,wait=off`: whether the VM
/// runs, and the STOP/RESUME events QEMU emitted (how many times something stopped it).
public final class QMPMonitor {
    private let fd: Int32
    private var pending: [UInt8] = []
    /// Every event line read so far, oldest first.
    public private(set) var events: [String] = []

    public init(socket path: String, timeout: Double = 10) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Fixtures.Failure("socket: errno \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8.prefix(raw.count - 1)) + [0])
        }
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if rc == 0 { break }
            guard Date() < deadline else { close(fd); throw Fixtures.Failure("QMP socket \(path): errno \(errno)") }
            usleep(50_000)
        }
        _ = try line(within: timeout)                       // the greeting
        _ = try execute("qmp_capabilities")
    }

    deinit { close(fd) }

    /// Sends a command and returns its reply line (events read on the way are kept).
    @discardableResult
    public func execute(_ command: String) throws -> String {
        let text = Array("{\"execute\": \"\(command)\"}\n".utf8)
        guard write(fd, text, text.count) == text.count else { throw Fixtures.Failure("QMP write: errno \(errno)") }
        while true {
            let reply = try line(within: 10)
            if reply.contains("\"event\"") { events.append(reply); continue }
            return reply
        }
    }

    /// True when QEMU reports the VM running.
    public func isRunning() throws -> Bool {
        try execute("query-status").contains("\"running\": true")
    }

    /// Reads the events that arrive until none has for `quiet` seconds; returns how many STOP and
    /// RESUME events were seen in all.
    public func runStateEvents(quiet: Double = 0.2) throws -> (stops: Int, resumes: Int) {
        while let next = try? line(within: quiet) { if next.contains("\"event\"") { events.append(next) } }
        return (events.filter { $0.contains("\"STOP\"") }.count, events.filter { $0.contains("\"RESUME\"") }.count)
    }

    private func line(within seconds: Double) throws -> String {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                defer { pending.removeSubrange(0...newline) }
                return String(decoding: pending[..<newline], as: UTF8.self)
            }
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let left = deadline.timeIntervalSinceNow
            guard left > 0, poll(&descriptor, 1, Int32((left * 1000).rounded(.up))) > 0 else {
                throw Fixtures.Failure("no QMP line within \(seconds) s")
            }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = read(fd, &buffer, buffer.count)
            guard n > 0 else { throw Fixtures.Failure("QMP socket closed") }
            pending += buffer[0..<n]
        }
    }
}
