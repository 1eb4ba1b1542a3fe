import Foundation

/// What a guest command printed (stdout and stderr as the console shows them, `\r\n` turned into
/// `\n`) and its exit status.
public struct CommandResult: Sendable, Hashable {
    public var output: String
    public var status: Int32

    public init(output: String, status: Int32) {
        self.output = output
        self.status = status
    }
}

/// The guest's first serial port (ttyS0, where its shell runs), reached through QEMU's unix
/// socket chardev.
///
/// QEMU's socket chardev (server=on) serves one client at a time and listens again when that
/// client leaves (checked: a second and third connection each ran commands), so every
/// `suture lab exec` connects, runs its command and disconnects; `LabVM` holds a lock file
/// around that so two clients never interleave. While no client is connected the guest's console
/// output is dropped, which is why each command carries its own markers.
public final class SerialConsole {
    /// The guest tty reads a line of at most 4095 bytes in canonical mode; leave room for markers.
    public static let maximumCommandLength = 3900

    public let socketPath: String
    private let connection: SocketConnection
    /// Received and not yet consumed.
    private var pending: [UInt8] = []
    /// The last bytes received, for error messages.
    private var recent: [UInt8] = []

    /// Connects, retrying for `timeout` seconds while the socket is missing or busy.
    public convenience init(socketPath: String, timeout: Double = 10) throws(LabError) {
        self.init(connection: try SocketConnection.connectUnix(socketPath, timeout: timeout))
    }

    init(connection: SocketConnection) {
        self.connection = connection
        self.socketPath = connection.name
    }

    /// The guest's `/init` line `SUTURE-READY uptime=2.01 boot_id=...`.
    public struct ReadyLine: Sendable, Hashable {
        public var uptime: Double
        public var bootID: String
    }

    /// Waits for the ready line /init prints just before it starts the shell. A kernel panic or
    /// QEMU going away ends the wait early with the console's last lines.
    public func waitForReady(timeout: Double) throws(LabError) -> ReadyLine {
        let deadline = Date().addingTimeInterval(timeout)
        let marker = Array((GuestFiles.readyMarker + " ").utf8)
        let panic = Array("Kernel panic".utf8)
        var searchFrom = 0
        while true {
            if let start = Self.find(marker, in: pending, from: searchFrom) {
                searchFrom = start
                if let newline = pending[(start + marker.count)...].firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: pending[(start + marker.count)..<newline], as: UTF8.self)
                    pending.removeSubrange(0...newline)
                    return try Self.parseReady(line, socket: socketPath)
                }
            } else {
                searchFrom = max(0, pending.count - marker.count + 1)
            }
            if Self.find(panic, in: pending, from: 0) != nil {
                // Let the panic message finish printing before quoting it.
                while (try? receive(until: Date().addingTimeInterval(0.5))) == .data {}
                throw .guestPanic(consoleTail: tail())
            }
            switch try receive(until: deadline) {
            case .data: continue
            case .timeout: throw .bootTimeout(seconds: timeout, consoleTail: tail())
            case .closed: throw .consoleClosed(socket: socketPath, waitingFor: "the guest's ready line", tail: tail())
            }
        }
    }

    static func parseReady(_ line: String, socket: String) throws(LabError) -> ReadyLine {
        var uptime: Double?
        var bootID: String?
        for field in line.split(separator: " ") {
            let trimmed = field.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.hasPrefix("uptime=") { uptime = Double(trimmed.dropFirst(7)) }
            if trimmed.hasPrefix("boot_id=") { bootID = String(trimmed.dropFirst(8)) }
        }
        guard let uptime, let bootID, !bootID.isEmpty else {
            throw .consoleProtocol(socket: socket, expected: "\(GuestFiles.readyMarker) uptime=<seconds> boot_id=<uuid>",
                                   found: line)
        }
        return ReadyLine(uptime: uptime, bootID: bootID)
    }

    /// Runs `command` in the guest shell and returns its output and exit status.
    ///
    /// The command is framed by two `echo`s whose text is split by quotes (`"SUTURE-B""-n"`):
    /// an echo of the typed line (if the tty echoes) or its redraw at 80 columns shows the quotes,
    /// only the shell's output shows the joined marker, so the output is exactly what lies
    /// between the markers. The command runs in a subshell: the console shell is the guest's
    /// PID 1, and an `exit` or `exec` there would panic the kernel. stdin is /dev/null so a command
    /// that reads input cannot swallow the end marker. On timeout the command gets ^C (SIGINT) so
    /// the shell is free for the next one.
    public func exec(_ command: String, timeout: Double = 60) throws(LabError) -> CommandResult {
        let body = command.trimmingCharacters(in: .whitespacesAndNewlines)
        guard body.utf8.count <= Self.maximumCommandLength else {
            throw .commandTooLong(length: body.utf8.count, limit: Self.maximumCommandLength)
        }
        let nonce = String(UInt64.random(in: 1...UInt64.max), radix: 16)
        let begin = Array("SUTURE-B-\(nonce)".utf8)
        let end = Array("SUTURE-E-\(nonce):".utf8)
        let line = "echo \"SUTURE-B\"\"-\(nonce)\"; ( \(body.isEmpty ? ":" : body)\n) </dev/null; "
            + "echo \"SUTURE-E\"\"-\(nonce):$?:\"\n"
        try connection.write(Array(line.utf8))

        let deadline = Date().addingTimeInterval(timeout)
        var outputStart: Int?
        var beginSearch = 0
        var endSearch = 0
        while true {
            if outputStart == nil {
                if let start = Self.find(begin, in: pending, from: beginSearch) {
                    beginSearch = start
                    if let newline = pending[(start + begin.count)...].firstIndex(of: UInt8(ascii: "\n")) {
                        outputStart = newline + 1
                        endSearch = newline + 1
                    }
                } else {
                    beginSearch = max(0, pending.count - begin.count + 1)
                }
            }
            if let outputStart {
                if let endStart = Self.find(end, in: pending, from: endSearch) {
                    endSearch = endStart
                    let statusStart = endStart + end.count
                    if let colon = pending[statusStart...].firstIndex(of: UInt8(ascii: ":")) {
                        let statusText = String(decoding: pending[statusStart..<colon], as: UTF8.self)
                        guard let status = Int32(statusText) else {
                            throw .consoleProtocol(socket: socketPath, expected: "an exit status after the end marker",
                                                   found: statusText)
                        }
                        let output = Self.text(pending[outputStart..<endStart])
                        let lineEnd = pending[colon...].firstIndex(of: UInt8(ascii: "\n")) ?? colon
                        pending.removeSubrange(0...lineEnd)
                        return CommandResult(output: output, status: status)
                    }
                } else {
                    endSearch = max(outputStart, pending.count - end.count + 1)
                }
            }
            switch try receive(until: deadline) {
            case .data:
                continue
            case .timeout:
                try? connection.write([0x03])
                throw .commandTimeout(command: body, seconds: timeout, tail: tail())
            case .closed:
                throw .consoleClosed(socket: socketPath, waitingFor: "the end of `\(body)`", tail: tail())
            }
        }
    }

    private enum Arrival { case data, timeout, closed }

    /// Reads what arrives before `deadline`.
    private func receive(until deadline: Date) throws(LabError) -> Arrival {
        let before = pending.count
        guard let n = try connection.read(into: &pending, timeout: deadline.timeIntervalSinceNow) else {
            return .timeout
        }
        if n == 0 { return .closed }
        recent.append(contentsOf: pending[before...])
        if recent.count > 16384 { recent.removeFirst(recent.count - 8192) }
        return .data
    }

    /// The console's last lines, for error messages.
    public func tail(lines: Int = 30) -> String {
        Self.lastLines(Self.text(recent[...]), count: lines)
    }

    static func lastLines(_ text: String, count: Int) -> String {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        return lines.suffix(count).joined(separator: "\n")
    }

    /// Console bytes as text: `\r\n` (the tty's output newline) becomes `\n`, stray `\r` go.
    static func text(_ bytes: ArraySlice<UInt8>) -> String {
        var cleaned: [UInt8] = []
        cleaned.reserveCapacity(bytes.count)
        for byte in bytes where byte != UInt8(ascii: "\r") { cleaned.append(byte) }
        return String(decoding: cleaned, as: UTF8.self)
    }

    /// First index of `needle` in `haystack` at or after `start`.
    static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard !needle.isEmpty, haystack.count >= needle.count else { return nil }
        var i = max(0, start)
        let last = haystack.count - needle.count
        let first = needle[0]
        while i <= last {
            if haystack[i] == first {
                var j = 1
                while j < needle.count, haystack[i + j] == needle[j] { j += 1 }
                if j == needle.count { return i }
            }
            i += 1
        }
        return nil
    }
}
