import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A process named by its pid *and* its start time, so a pid the kernel reused for another
/// program is never mistaken for the QEMU the lab started (and never signalled).
public struct ProcessIdentity: Sendable, Hashable, Codable {
    public var pid: Int32
    /// Field 22 of /proc/PID/stat: clock ticks after host boot when the process started.
    public var startTime: UInt64

    public init(pid: Int32, startTime: UInt64) {
        self.pid = pid
        self.startTime = startTime
    }

    /// The identity of a live process, read from /proc; nil when there is no such process.
    public static func of(pid: Int32) -> ProcessIdentity? {
        guard let stat = ProcessStat.read(pid: pid) else { return nil }
        return ProcessIdentity(pid: pid, startTime: stat.startTime)
    }

    /// True while this very process exists and is not a zombie.
    public var isRunning: Bool {
        guard let stat = ProcessStat.read(pid: pid), stat.startTime == startTime else { return false }
        return stat.state != "Z" && stat.state != "X"
    }

    /// The command name (`comm`, at most 15 characters) when the process still matches.
    var command: String? {
        guard let stat = ProcessStat.read(pid: pid), stat.startTime == startTime else { return nil }
        return stat.command
    }

    /// Collects the exit status if this is our child (a test process that started QEMU); a
    /// process that is not our child is reaped by its own parent or init.
    func reapIfChild() {
        var status: Int32 = 0
        _ = waitpid(pid, &status, WNOHANG)
    }

    /// Waits up to `timeout` seconds for the process to end and says how it ended: "exit status N"
    /// or "killed by signal N" for our own child (which this reaps), "ended" for another's.
    /// nil while it still runs.
    func waitForEnd(timeout: Double) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid {
                let signal = status & 0x7f
                return signal == 0 ? "exit status \((status >> 8) & 0xff)" : "killed by signal \(signal)"
            }
            // result < 0: not our child (ECHILD); /proc decides.
            if result < 0, !isRunning { return "ended" }
            if Date() >= deadline { return nil }
            usleep(10_000)
        }
    }

    /// Sends `signal` only if the pid still names this process.
    @discardableResult
    func signal(_ number: Int32) -> Bool {
        guard isRunning else { return false }
        return kill(pid, number) == 0
    }

    /// Waits up to `timeout` seconds for the process to end; true when it has.
    func waitForExit(timeout: Double) -> Bool {
        waitForEnd(timeout: timeout) != nil
    }
}

/// The fields of /proc/PID/stat the lab uses.
struct ProcessStat {
    var command: String
    var state: Character
    var startTime: UInt64

    static func read(pid: Int32) -> ProcessStat? {
        guard let text = try? Files.readText("/proc/\(pid)/stat") else { return nil }
        return parse(text)
    }

    /// `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so fields are counted
    /// after the last ')'. The start time is field 22 overall, the 20th after comm.
    static func parse(_ text: String) -> ProcessStat? {
        guard let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")") else { return nil }
        let command = String(text[text.index(after: open)..<close])
        let rest = text[text.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        guard rest.count >= 20, let state = rest[0].first, let start = UInt64(rest[19]) else { return nil }
        return ProcessStat(command: command, state: state, startTime: start)
    }
}

/// Starts a long-lived program (QEMU) that must outlive the command that started it.
enum DetachedProcess {
    /// glibc's POSIX_SPAWN_SETSID (spawn.h, under _GNU_SOURCE, which Swift's Glibc import does not
    /// define): the child gets its own session, so a terminal hangup after `suture lab up` does not
    /// reach QEMU.
    private static let spawnSetSID: Int32 = 0x80

    /// Spawns `executable` with stdin from /dev/null and stdout+stderr into `outputFile`. Every
    /// other descriptor is closed in the child: an inherited pipe would keep a caller such as
    /// `make` or a test runner waiting for EOF as long as the VM lives.
    static func spawn(_ executable: String, _ arguments: [String], outputFile: String) throws(LabError) -> Int32 {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGHUP, SIGINT, SIGQUIT, SIGPIPE, SIGTERM, SIGCHLD, SIGUSR1, SIGUSR2] {
            sigaddset(&defaults, signal)
        }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | spawnSetSID))

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputFile, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        for fd in openDescriptors() where fd > 2 {
            posix_spawn_file_actions_addclose(&actions, fd)
        }

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let result = argv.withUnsafeBufferPointer { buffer in
            posix_spawn(&pid, executable, &actions, &attributes, buffer.baseAddress!, environ)
        }
        guard result == 0 else { throw .io(path: executable, operation: "posix_spawn", errno: result) }
        return pid
    }

    private static func openDescriptors() -> [Int32] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return names.compactMap { Int32($0) }
    }
}
