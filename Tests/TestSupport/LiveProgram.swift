import Foundation

/// A child process started with posix_spawn in a new session and with a clean signal mask.
///
/// Both matter for ptrace and gdbserver tests: the test runner's threads block most signals and
/// Foundation's Process passes that mask on, so a child would never take the SIGINT that gdbserver
/// uses to interrupt it (and gdbserver itself would never see the SIGIO telling it a 0x03 arrived).
/// gdbserver signals the inferior's process group, so the child leads its own.
public final class Spawned: @unchecked Sendable {
    public let pid: Int32
    private var reaped = false

    public init(_ path: String, _ arguments: [String], stdout: Int32? = nil, stderrPath: String? = nil,
                environment: [String: String] = [:]) throws {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | 0x80 /* SETSID */))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        if let stdout { posix_spawn_file_actions_adddup2(&actions, stdout, 1) } else {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        }
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let variables = ProcessInfo.processInfo.environment.merging(environment) { $1 }.map { "\($0)=\($1)" }
        let envp: [UnsafeMutablePointer<CChar>?] = variables.map { strdup($0) } + [nil]
        defer { envp.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        guard rc == 0 else { throw Fixtures.Failure("posix_spawn \(path): \(String(cString: strerror(rc)))") }
        self.pid = pid
    }

    /// Still running (not exited, or exited but reaped by a tracer's waitpid)?
    public var isRunning: Bool {
        guard !reaped else { return false }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid || (r < 0 && errno == ECHILD) {
            reaped = true
            return false
        }
        return true
    }

    public func waitForExit(seconds: Double) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while isRunning, Date() < end { usleep(5_000) }
        return !isRunning
    }

    public func kill(_ signal: Int32 = SIGKILL) {
        guard isRunning else { return }
        Glibc.kill(pid, signal)
        _ = waitForExit(seconds: 10)
    }
}

/// A fixture program running for a test: its output collected line by line, killed by `stop()`
/// (tests call it in `defer`).
public final class LiveProgram: @unchecked Sendable {
    public let executable: URL
    public let child: Spawned
    public var pid: Int32 { child.pid }
    /// Addresses the program printed: `check=0x…`, `pattern=0x…`.
    public private(set) var printed: [String: UInt64] = [:]

    private let lock = NSLock()
    private var lines: [String] = []
    private var partial = ""
    private var lineCount = 0

    public init(_ executable: URL, arguments: [String] = []) throws {
        self.executable = executable
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw Fixtures.Failure("pipe failed") }
        do {
            child = try Spawned(executable.path, arguments, stdout: fds[1])
        } catch {
            close(fds[0]); close(fds[1])
            throw error
        }
        close(fds[1])
        let readEnd = fds[0]
        let thread = Thread { [weak self] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(readEnd, &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                guard let self else { break }
                self.append(String(decoding: buffer[0..<n], as: UTF8.self))
            }
            close(readEnd)
        }
        thread.start()
        do {
            let ready = try waitForLine(timeout: 10) { $0.hasPrefix("ready ") }
            for field in ready.split(separator: " ").dropFirst() {
                let parts = field.split(separator: "=", maxSplits: 1)
                guard parts.count == 2, parts[0] != "pid" else { continue }
                printed[String(parts[0])] = UInt64(parts[1].dropFirst(2), radix: 16)
            }
        } catch {
            child.kill()
            throw error
        }
    }

    private func append(_ text: String) {
        lock.lock()
        defer { lock.unlock() }
        partial += text
        while let newline = partial.firstIndex(of: "\n") {
            lines.append(String(partial[..<newline]))
            lineCount += 1
            partial = String(partial[partial.index(after: newline)...])
        }
        if lines.count > 4000 { lines.removeFirst(lines.count - 2000) }
    }

    /// How many lines have been printed so far.
    public var linesSeen: Int {
        lock.lock()
        defer { lock.unlock() }
        return lineCount
    }

    /// Waits for a line printed after the first `after` lines that satisfies `matches`.
    @discardableResult
    public func waitForLine(after: Int = 0, timeout: Double = 10, _ matches: (String) -> Bool) throws -> String {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            lock.lock()
            let firstKept = lineCount - lines.count
            let start = max(0, after - firstKept)
            let found = start < lines.count ? lines[start...].first(where: matches) : nil
            lock.unlock()
            if let found { return found }
            usleep(2000)
        }
        lock.lock()
        let tail = lines.suffix(3).joined(separator: " | ")
        lock.unlock()
        throw Fixtures.Failure("\(executable.lastPathComponent) printed no matching line in \(timeout) s (last: \(tail))")
    }

    /// The state letter from /proc/PID/stat (R, S, t, T, Z…), or nil once the process is gone.
    public var state: Character? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(close, offsetBy: 2)]
    }

    public func stop() { child.kill() }
}

/// Helpers shared by the target tests.
public enum TargetFixtures {
    /// Builds Tests/Fixtures/targets_loop.c (at -O0, so check() keeps its conditional jump).
    public static func loopProgram() throws -> URL {
        try Fixtures.compileFixture("targets_loop.c", flags: ["-O0", "-pthread"])
    }

    /// A TCP port nobody listens on right now (the kernel picks it).
    public static func freePort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Fixtures.Failure("socket failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw Fixtures.Failure("bind failed") }
        return UInt16(bigEndian: address.sin_port)
    }

    /// The address `check` (a symbol of `executable`) has in the running process, from
    /// /proc/PID/maps and `nm`/`readelf` as independent oracles: the load bias is the start of the
    /// mapping at file offset 0 minus the first PT_LOAD's address.
    public static func runtimeAddress(of symbol: String, in executable: URL, pid: Int32) throws -> (runtime: UInt64, fileOffset: UInt64) {
        let nm = try Fixtures.check("nm", [executable.path])
        guard let line = nm.split(separator: "\n").first(where: { $0.hasSuffix(" " + symbol) }),
              let value = UInt64(line.split(separator: " ")[0], radix: 16) else {
            throw Fixtures.Failure("nm: no \(symbol)")
        }
        let loads = try programHeaders(executable)
        guard let segment = loads.first(where: { value >= $0.vaddr && value < $0.vaddr + $0.filesz }) else {
            throw Fixtures.Failure("\(symbol) is in no PT_LOAD")
        }
        let maps = try String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)
        let real = executable.resolvingSymlinksInPath().path
        guard let first = maps.split(separator: "\n").first(where: {
            let f = $0.split(separator: " ", omittingEmptySubsequences: true)
            return f.count >= 6 && f[2] == "00000000" && f[5] == real
        }), let start = UInt64(first.split(separator: "-")[0], radix: 16) else {
            throw Fixtures.Failure("no mapping of \(real) at offset 0 in /proc/\(pid)/maps")
        }
        let bias = start - loads[0].vaddr
        return (value + bias, value - segment.vaddr + segment.offset)
    }

    /// The executable mappings of a process, from /proc/PID/maps: where its program counters may be.
    public static func executableRanges(pid: Int32) throws -> [ClosedRange<UInt64>] {
        let maps = try String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)
        return maps.split(separator: "\n").compactMap { line -> ClosedRange<UInt64>? in
            let f = line.split(separator: " ")
            guard f.count > 1, f[1].contains("x") else { return nil }
            let r = f[0].split(separator: "-").compactMap { UInt64($0, radix: 16) }
            return r.count == 2 ? r[0]...(r[1] - 1) : nil
        }
    }

    public struct Load { public var offset: UInt64; public var vaddr: UInt64; public var filesz: UInt64; public var memsz: UInt64 }

    /// PT_LOAD entries from `readelf -lW`.
    public static func programHeaders(_ file: URL) throws -> [Load] {
        try Fixtures.check("readelf", ["-lW", file.path]).split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.first == "LOAD", f.count >= 6 else { return nil }
            func hex(_ s: Substring) -> UInt64 { UInt64(s.dropFirst(2), radix: 16) ?? 0 }
            return Load(offset: hex(f[1]), vaddr: hex(f[2]), filesz: hex(f[4]), memsz: hex(f[5]))
        }
    }

    /// The conditional jump in `symbol` per objdump: its offset in the function and its opcode byte.
    public static func conditionalJump(in symbol: String, of executable: URL) throws -> (offset: UInt64, opcode: UInt8) {
        let text = try Fixtures.check("objdump", ["-d", "--disassemble=\(symbol)", executable.path])
        var start: UInt64?
        for line in text.split(separator: "\n") {
            if line.hasSuffix("<\(symbol)>:"), let a = UInt64(line.split(separator: " ")[0], radix: 16) { start = a }
            let parts = line.split(separator: "\t")
            guard let start, parts.count >= 3, parts[2].hasPrefix("j"), !parts[2].hasPrefix("jmp"),
                  let address = UInt64(parts[0].trimmingCharacters(in: .whitespaces).dropLast(), radix: 16),
                  let opcode = UInt8(parts[1].split(separator: " ")[0], radix: 16) else { continue }
            return (address - start, opcode)
        }
        throw Fixtures.Failure("objdump shows no conditional jump in \(symbol)")
    }

    /// Bytes of a file at an offset (the oracle for code bytes).
    public static func fileBytes(_ file: URL, offset: UInt64, count: Int) throws -> [UInt8] {
        let handle = try FileHandle(forReadingFrom: file)
        defer { try? handle.close() }
        try handle.seek(toOffset: offset)
        return [UInt8](try handle.read(upToCount: count) ?? Data())
    }

    /// gdbserver attached to `pid` on a free port; killed by the caller's `defer`.
    /// Its messages go to /tmp/suture-gdbserver-PORT.log.
    public static func startGDBServer(attachingTo pid: Int32) throws -> (process: Spawned, port: UInt16) {
        let port = try freePort()
        let server = try Spawned("/usr/bin/gdbserver", ["--attach", "127.0.0.1:\(port)", String(pid)],
                                 stderrPath: "/tmp/suture-gdbserver-\(port).log")
        // Wait until it listens (it attaches first, then opens the port).
        let end = Date().addingTimeInterval(10)
        while Date() < end {
            if let tcp = try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8),
               tcp.contains(String(format: ":%04X 00000000:0000 0A", port)) {
                return (server, port)
            }
            guard server.isRunning else { throw Fixtures.Failure("gdbserver exited early") }
            usleep(10_000)
        }
        server.kill()
        throw Fixtures.Failure("gdbserver never listened on port \(port)")
    }
}

/// The loop program (`targets_loop.c`) running under gdbserver: where the GDB protocol tests
/// start. `stop()` kills gdbserver, then the program.
public final class GDBServerFixture {
    public let executable: URL
    public let program: LiveProgram
    public let server: Spawned
    public let port: UInt16

    /// `arguments` go to the program (its number of extra threads).
    public init(arguments: [String] = []) throws {
        executable = try TargetFixtures.loopProgram()
        program = try LiveProgram(executable, arguments: arguments)
        do {
            (server, port) = try TargetFixtures.startGDBServer(attachingTo: program.pid)
        } catch {
            program.stop()
            throw error
        }
    }

    public func stop() {
        server.kill()
        program.stop()
    }
}
