import Foundation
import Testing
import TestSupport

/// A real daemon from Debian's archive, patched live while it serves: memcached (the `memcached`
/// package, stripped, PIE, 10 threads). A client keeps sending `set`/`get`/`version` on one
/// connection the whole time and checks every answer; `suture poke` changes the version string in
/// its .rodata (found by `suture symbols --string`, checked with readelf and /proc/PID/maps), the client sees the new
/// version, `suture revert` brings the old one back, and no request goes unanswered.
@Suite(.serialized) struct DaemonPatchingTests {
    static let binary = "/usr/bin/memcached"

    /// A blocking memcached text-protocol client with a 5 s receive timeout: a lost reply fails the
    /// test instead of hanging it.
    final class Client {
        let fd: Int32
        private var buffer: [UInt8] = []

        init(port: UInt16) throws {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw Fixtures.Failure("socket: \(String(cString: strerror(errno)))") }
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            guard connected else {
                close(fd)
                throw Fixtures.Failure("connect to 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
            }
        }

        deinit { close(fd) }

        func send(_ text: String) throws {
            let bytes = Array(text.utf8)
            var done = 0
            while done < bytes.count {
                let n = bytes[done...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                guard n > 0 else { throw Fixtures.Failure("write: \(String(cString: strerror(errno)))") }
                done += n
            }
        }

        /// One `\r\n`-terminated line, without the terminator.
        func line() throws -> String {
            while true {
                if let end = buffer.firstIndex(of: 0x0a) {
                    let text = String(decoding: buffer[..<end].filter { $0 != 0x0d }, as: UTF8.self)
                    buffer.removeSubrange(...end)
                    return text
                }
                var chunk = [UInt8](repeating: 0, count: 4096)
                let n = read(fd, &chunk, chunk.count)
                guard n > 0 else { throw Fixtures.Failure(n == 0 ? "memcached closed the connection" : "no reply within 5 s (\(String(cString: strerror(errno))))") }
                buffer += chunk[0..<n]
            }
        }
    }

    /// What the client saw while running.
    final class Traffic: @unchecked Sendable {
        private let lock = NSLock()
        private var _requests = 0, _answered = 0
        private var _versions: [String] = []
        private var _failure: String?
        private var _stop = false

        var requests: Int { lock.withLock { _requests } }
        var answered: Int { lock.withLock { _answered } }
        var versions: [String] { lock.withLock { _versions } }
        var failure: String? { lock.withLock { _failure } }
        var stopRequested: Bool { lock.withLock { _stop } }
        func stop() { lock.withLock { _stop = true } }
        func sent() { lock.withLock { _requests += 1 } }
        func got(version: String? = nil) {
            lock.withLock {
                _answered += 1
                if let version, _versions.last != version { _versions.append(version) }
            }
        }
        func fail(_ text: String) { lock.withLock { if _failure == nil { _failure = text } } }

        /// Waits until the client has seen `version` (as the latest), or fails after `seconds`.
        func waitFor(version: String, seconds: Double = 10) throws {
            let end = Date().addingTimeInterval(seconds)
            while Date() < end {
                if let failure { throw Fixtures.Failure("client: \(failure)") }
                if versions.last == version { return }
                usleep(2_000)
            }
            throw Fixtures.Failure("the client never saw \(version) (saw \(versions))")
        }
    }

    /// set, get and version in a loop until stopped; every reply is checked.
    static func runClient(port: UInt16, traffic: Traffic) {
        do {
            let client = try Client(port: port)
            var i = 0
            while !traffic.stopRequested {
                let value = "value-\(i)"
                traffic.sent()
                try client.send("set key\(i % 64) 0 0 \(value.utf8.count)\r\n\(value)\r\n")
                let stored = try client.line()
                guard stored == "STORED" else { throw Fixtures.Failure("set key\(i % 64): \(stored)") }
                traffic.got()
                traffic.sent()
                try client.send("get key\(i % 64)\r\n")
                let header = try client.line(), body = try client.line(), end = try client.line()
                guard header.hasPrefix("VALUE key\(i % 64) 0 "), body == value, end == "END" else {
                    throw Fixtures.Failure("get key\(i % 64): \(header) / \(body) / \(end)")
                }
                traffic.got()
                traffic.sent()
                try client.send("version\r\n")
                let version = try client.line()
                guard version.hasPrefix("VERSION ") else { throw Fixtures.Failure("version: \(version)") }
                traffic.got(version: String(version.dropFirst(8)))
                i += 1
            }
        } catch {
            traffic.fail("\(error)")
        }
    }

    /// The live address of `text` (a NUL-terminated string in .rodata) in the process: its file
    /// offset (the bytes of the file), then its link address (readelf's section header), then the
    /// load bias (the mapping of file offset 0 in /proc/PID/maps; the first PT_LOAD is at 0).
    static func liveAddress(of text: String, pid: Int32) throws -> UInt64 {
        let file = try Data(contentsOf: URL(fileURLWithPath: binary))
        guard let found = file.firstRange(of: Data(text.utf8) + Data([0])) else { throw Fixtures.Failure("\(text) not in \(binary)") }
        let offset = UInt64(found.lowerBound)
        let sections = try Fixtures.check("readelf", ["-SW", binary])
        guard let line = sections.split(separator: "\n").first(where: { $0.contains(" .rodata ") }) else { throw Fixtures.Failure("no .rodata") }
        let fields = line.split(separator: "]", maxSplits: 1)[1].split(separator: " ", omittingEmptySubsequences: true)
        guard let address = UInt64(fields[2], radix: 16), let sectionOffset = UInt64(fields[3], radix: 16),
              let size = UInt64(fields[4], radix: 16), offset >= sectionOffset, offset < sectionOffset + size else {
            throw Fixtures.Failure("\(text) is not in .rodata: \(line)")
        }
        let loads = try TargetFixtures.programHeaders(URL(fileURLWithPath: binary))
        let maps = try String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)
        guard let first = maps.split(separator: "\n").first(where: { $0.hasSuffix(binary) && $0.split(separator: " ")[2] == "00000000" }),
              let start = UInt64(first.split(separator: "-")[0], radix: 16) else { throw Fixtures.Failure("\(binary) not mapped in \(pid)") }
        return start - loads[0].vaddr + address + (offset - sectionOffset)
    }

    @Test func memcachedVersionPatchedLiveWhileServing() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            throw Fixtures.Failure("\(Self.binary) is missing: install Debian's memcached package (`apt-get install memcached`, in the Makefile's APT_PACKAGES)")
        }
        let versionLine = try Fixtures.check(Self.binary, ["-V"])   // "memcached 1.6.18"
        let version = String(try #require(versionLine.split(separator: " ").last).trimmingCharacters(in: .whitespacesAndNewlines))
        let patched = String(version.map { $0 == "." ? "." : "9" })      // same length: 9.9.99
        #expect(patched != version && patched.count == version.count)

        let port = try TargetFixtures.freePort()
        let daemon = try Spawned(Self.binary, ["-l", "127.0.0.1", "-p", String(port), "-U", "0", "-u", "root", "-t", "4"],
                                 stderrPath: "/tmp/suture-memcached-\(port).log")
        defer { daemon.kill(SIGTERM) }
        let listening = Date().addingTimeInterval(10)
        while Date() < listening, !((try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8)) ?? "")
            .contains(String(format: ":%04X 00000000:0000 0A", port)) {
            guard daemon.isRunning else { throw Fixtures.Failure("memcached exited: see /tmp/suture-memcached-\(port).log") }
            usleep(10_000)
        }
        let threads = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(daemon.pid)/task").count
        #expect(threads > 4, "memcached serves with several threads (\(threads))")

        let traffic = Traffic()
        let client = Thread { Self.runClient(port: port, traffic: traffic) }
        client.start()
        defer { traffic.stop() }
        try traffic.waitFor(version: version)

        // Only the digits change: "VERSION 1.6.18" → "VERSION 9.9.99", inside its .rodata. suture
        // finds the string; readelf and /proc/PID/maps confirm where it is.
        let find = try Fixtures.suture(["symbols", "-t", "pid:\(daemon.pid)", "--string", "VERSION " + version])
        #expect(find.status == 0, "\(find.stderr)")
        let found = try #require(find.stdout.split(separator: "\n").first.flatMap { UInt64($0.prefix(16), radix: 16) }, "\(find.stdout)")
        #expect(find.stdout.contains("\(Self.binary)  .rodata+0x"))
        #expect(found == (try Self.liveAddress(of: "VERSION " + version, pid: daemon.pid)))
        let address = found + 8
        let state = try Fixtures.temporaryFolder("daemon-state").path
        let t = ["-t", "pid:\(daemon.pid)", "--state-dir", state]
        let hex = { (s: String) in s.utf8.map { String(format: "%02x", $0) }.joined(separator: " ") }
        let poke = try Fixtures.suture(["poke"] + t + ["0x" + String(address, radix: 16), "--expect", hex(version), "--write", hex(patched)])
        #expect(poke.status == 0, "\(poke.stderr)")
        #expect(poke.stdout.contains("data: no instruction boundaries (r--p mapping of \(Self.binary))"), "\(poke.stdout)")
        #expect(poke.stdout.contains("✓ busy"), "every thread stopped, none in the hunk")
        try traffic.waitFor(version: patched)

        let ps = try Fixtures.suture(["ps", "--state-dir", state])
        #expect(ps.stdout.contains("\(daemon.pid)  applied  applied"), "\(ps.stdout)")

        // Keep serving a while with the patch in, then revert under load.
        let before = traffic.answered
        while traffic.answered < before + 300, traffic.failure == nil { usleep(2_000) }
        let revert = try Fixtures.suture(["revert"] + t + ["--all"])
        #expect(revert.status == 0, "\(revert.stderr)")
        try traffic.waitFor(version: version)
        let after = traffic.answered
        while traffic.answered < after + 300, traffic.failure == nil { usleep(2_000) }

        traffic.stop()
        let end = Date().addingTimeInterval(10)
        while !client.isFinished, Date() < end { usleep(5_000) }
        #expect(traffic.failure == nil, "\(traffic.failure ?? "")")
        #expect(traffic.requests == traffic.answered, "every request answered: \(traffic.requests) sent, \(traffic.answered) answered")
        #expect(traffic.versions == [version, patched, version], "the client saw the change and its revert, in order")
        #expect(daemon.isRunning)
        #expect(try Fixtures.suture(["status"] + t).stdout.contains(" reverted "))
    }
}
