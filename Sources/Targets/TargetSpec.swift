/// How a user names a target on the command line. Parsing only: opening `lab` and `local` is done by
/// higher layers, the others by the backends' initializers.
public enum TargetSpec: Sendable, Hashable, CustomStringConvertible {
    /// A GDB remote stub (QEMU's gdbstub, gdbserver) over TCP.
    case gdb(host: String, port: UInt16)
    /// A running process, through ptrace and /proc/PID/mem.
    case process(pid: Int32)
    /// /dev/kmem (file offset = virtual address).
    case kmem(path: String)
    /// /dev/mem (file offset = physical address).
    case mem(path: String)
    /// /proc/kcore or another ELF core (read-only).
    case kcore(path: String)
    /// An ELF file on disk (executable, shared object, .ko).
    case file(path: String)
    /// Suture's QEMU lab.
    case lab
    /// The running kernel, through Suture's helper module.
    case local

    public static let defaultKmemPath = "/dev/kmem"
    public static let defaultMemPath = "/dev/mem"
    public static let defaultKcorePath = "/proc/kcore"

    /// Parses `gdb:HOST:PORT` (IPv6 hosts in brackets: `gdb:[::1]:1234`), `pid:N`, `kmem[:PATH]`,
    /// `mem[:PATH]`, `kcore[:PATH]`, `file:PATH`, `lab`, `local`.
    public static func parse(_ text: String) throws(TargetError) -> TargetSpec {
        let kind: Substring
        let rest: Substring?
        if let colon = text.firstIndex(of: ":") {
            kind = text[..<colon]
            rest = text[text.index(after: colon)...]
        } else {
            kind = text[...]
            rest = nil
        }
        func path(_ fallback: String?) throws(TargetError) -> String {
            guard let rest else {
                if let fallback { return fallback }
                throw .invalidSpec(text: text, reason: "'\(kind)' needs a path after ':'")
            }
            guard !rest.isEmpty else { throw .invalidSpec(text: text, reason: "empty path after '\(kind):'") }
            return String(rest)
        }
        switch kind {
        case "gdb":
            guard let rest else { throw .invalidSpec(text: text, reason: "gdb needs HOST:PORT") }
            return try parseGDB(rest, text: text)
        case "pid":
            guard let rest, let pid = Int32(rest), pid > 0 else {
                throw .invalidSpec(text: text, reason: "pid needs a positive process id")
            }
            return .process(pid: pid)
        case "kmem": return .kmem(path: try path(defaultKmemPath))
        case "mem": return .mem(path: try path(defaultMemPath))
        case "kcore": return .kcore(path: try path(defaultKcorePath))
        case "file": return .file(path: try path(nil))
        case "lab", "local":
            guard rest == nil else { throw .invalidSpec(text: text, reason: "'\(kind)' takes no argument") }
            return kind == "lab" ? .lab : .local
        case "":
            throw .invalidSpec(text: text, reason: "empty target kind")
        default:
            throw .invalidSpec(text: text, reason: "unknown target kind '\(kind)'")
        }
    }

    private static func parseGDB(_ rest: Substring, text: String) throws(TargetError) -> TargetSpec {
        let host: Substring
        let portText: Substring
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else {
                throw .invalidSpec(text: text, reason: "unterminated '[' in IPv6 host")
            }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            guard after.hasPrefix(":") else { throw .invalidSpec(text: text, reason: "gdb needs HOST:PORT") }
            portText = after.dropFirst()
        } else {
            guard let colon = rest.lastIndex(of: ":") else {
                throw .invalidSpec(text: text, reason: "gdb needs HOST:PORT")
            }
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
            guard !host.contains(":") else {
                throw .invalidSpec(text: text, reason: "write IPv6 hosts in brackets: gdb:[::1]:1234")
            }
        }
        guard !host.isEmpty else { throw .invalidSpec(text: text, reason: "empty host") }
        guard let port = UInt16(portText), port > 0 else {
            throw .invalidSpec(text: text, reason: "port '\(portText)' is not a number from 1 to 65535")
        }
        return .gdb(host: String(host), port: port)
    }

    public var description: String {
        switch self {
        case let .gdb(host, port): return host.contains(":") ? "gdb:[\(host)]:\(port)" : "gdb:\(host):\(port)"
        case let .process(pid): return "pid:\(pid)"
        case let .kmem(path): return "kmem:\(path)"
        case let .mem(path): return "mem:\(path)"
        case let .kcore(path): return "kcore:\(path)"
        case let .file(path): return "file:\(path)"
        case .lab: return "lab"
        case .local: return "local"
        }
    }
}
