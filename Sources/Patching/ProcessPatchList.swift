import Foundation
import ELF
import Targets

/// The processes the journal says Suture patched (targets named `pid:N`), each patch checked
/// against the live process: still applied, reverted, drifted, or the process is gone.
///
/// A pid can be reused. A process counts as the one patched only if it started before the patch's
/// last journal record and runs an executable of the same build-id; otherwise the patched one
/// has exited (and its patches died with it).
public enum ProcessPatchList {
    public enum Live: Sendable, Hashable, CustomStringConvertible {
        case applied, reverted, drifted
        /// The patched process is gone; `detail` says how that is known.
        case exited(detail: String)
        /// The process is there but its memory could not be read.
        case unreadable(detail: String)

        public var description: String {
            switch self {
            case .applied: "applied"
            case .reverted: "reverted"
            case .drifted: "drifted"
            case .exited: "exited"
            case .unreadable: "unreadable"
            }
        }
    }

    public struct Entry: Sendable {
        public var pid: Int32
        public var patch: PatchRecord
        public var live: Live
        /// The executable as journaled (path and build-id).
        public var executable: String?
        /// Live bytes per hunk, or why the state is what it is.
        public var detail: String
    }

    /// Every patch of every `pid:N` target in the journal; without `includeReverted`, only patches
    /// the journal shows applied or half done (what might still be in memory).
    public static func list(journal: Journal, includeReverted: Bool = false) throws -> [Entry] {
        var targets: [String] = []
        for record in try journal.records() where record.target.hasPrefix("pid:") && !targets.contains(record.target) {
            targets.append(record.target)
        }
        var entries: [Entry] = []
        for name in targets {
            guard case let .process(pid)? = try? TargetSpec.parse(name) else { continue }
            let patches = try journal.patches(target: name).filter { includeReverted || $0.state != .reverted }
            guard !patches.isEmpty else { continue }
            entries += check(pid: pid, name: name, patches: patches, journal: journal)
        }
        return entries
    }

    static func check(pid: Int32, name: String, patches: [PatchRecord], journal: Journal) -> [Entry] {
        func all(_ live: Live, _ detail: String) -> [Entry] {
            patches.map { Entry(pid: pid, patch: $0, live: live, executable: executable($0), detail: detail) }
        }
        guard let started = startTime(pid: pid) else { return all(.exited(detail: "no process \(pid)"), "no process \(pid)") }
        let target: ProcessTarget
        do { target = try ProcessTarget(pid: pid) } catch let error as TargetError {
            if case .noSuchProcess = error { return all(.exited(detail: "\(error)"), "\(error)") }
            if case .processExited = error { return all(.exited(detail: "\(error)"), "\(error)") }
            return all(.unreadable(detail: "\(error)"), "\(error)")
        } catch { return all(.unreadable(detail: "\(error)"), "\(error)") }
        defer { target.close() }
        let identity = try? target.identity()
        let engine = PatchEngine(target: target, targetName: name, symbols: nil, journal: journal)
        let statuses = (try? engine.status()) ?? []
        return patches.map { patch in
            let recorded = patch.lastEvent?.time ?? 0
            // Start times have the clock tick's resolution (10 ms) twice over: allow a little more.
            if started > recorded + 0.05 {
                let detail = "pid \(pid) is now a process started after the patch (\(identity?.path ?? "?"))"
                return Entry(pid: pid, patch: patch, live: .exited(detail: detail), executable: executable(patch), detail: detail)
            }
            if let want = patch.identity?.buildID, let have = identity?.buildID, want != have {
                let detail = "pid \(pid) now runs \(identity?.path ?? "?") (build-id \(have), patched \(want))"
                return Entry(pid: pid, patch: patch, live: .exited(detail: detail), executable: executable(patch), detail: detail)
            }
            guard let status = statuses.last(where: { $0.record.id == patch.id }) else {
                return Entry(pid: pid, patch: patch, live: .unreadable(detail: "no status"), executable: executable(patch), detail: "no status")
            }
            let live: Live
            switch status.live {
            case .applied: live = .applied
            case .reverted: live = .reverted
            case .drifted: live = .drifted
            case .unreadable: live = .unreadable(detail: status.detail)
            }
            return Entry(pid: pid, patch: patch, live: live, executable: executable(patch), detail: status.detail)
        }
    }

    static func executable(_ patch: PatchRecord) -> String? {
        guard let identity = patch.identity else { return nil }
        return identity.path ?? identity.buildID.map { "build-id " + $0 }
    }

    /// When the process started, in seconds since 1970: now minus how long ago it started, which
    /// is the uptime (/proc/uptime) minus field 22 of /proc/PID/stat (its start, in clock ticks
    /// after boot). Both have 10 ms resolution. nil when there is no such process (or a zombie).
    static func startTime(pid: Int32) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        // After the command name: state is field 3, starttime field 22.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19, fields[0] != "Z", fields[0] != "X", let ticks = Double(fields[19]),
              let uptimeText = try? String(contentsOfFile: "/proc/uptime", encoding: .utf8),
              let uptime = uptimeText.split(separator: " ").first.flatMap({ Double($0) }) else { return nil }
        let ago = uptime - ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
        return Date().timeIntervalSince1970 - ago
    }
}
