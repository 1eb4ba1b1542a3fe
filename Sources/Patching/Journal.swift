import Foundation
import ELF
import Targets

/// The record of every write Suture makes, so that any patch can be reverted and an interrupted apply
/// recovered.
///
/// A state directory (default `/var/lib/suture`, `SUTURE_STATE_DIR` to change) holds `journal.jsonl`,
/// one JSON record per line, appended and fsynced, and `lock`, which `withLock` holds (flock) for the
/// whole of an apply or revert so that two invocations never interleave. An `applyIntent` record is on
/// disk before the first byte is written; if no `applyDone` or `applyAborted` follows, the apply was
/// interrupted and `PatchEngine.recover` decides from the live bytes.
public struct Journal: Sendable {
    public let directory: String
    public var logPath: String { directory + "/journal.jsonl" }
    var lockPath: String { directory + "/lock" }

    public init(directory: String) {
        self.directory = directory
    }

    /// `SUTURE_STATE_DIR`, else `/var/lib/suture`.
    public static func defaultDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let dir = environment["SUTURE_STATE_DIR"], !dir.isEmpty { return dir }
        return "/var/lib/suture"
    }

    /// Runs `body` holding the journal's exclusive lock (waits for other Suture processes).
    public func withLock<T>(_ body: () throws -> T) throws -> T {
        try ensureDirectory()
        let lock = try FileLock(lockPath, permissions: 0o600, throwing: JournalError.self)
        return try withExtendedLifetime(lock) { try body() }
    }

    /// Appends one record and makes it durable (fsync) before returning.
    public func append(_ record: JournalRecord) throws {
        try ensureDirectory()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var line = try encoder.encode(record)
        line.append(UInt8(ascii: "\n"))
        let fd = open(logPath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw JournalError.io(path: logPath, operation: "open", errno: errno) }
        defer { close(fd) }
        try line.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = write(fd, raw.baseAddress! + done, raw.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw JournalError.io(path: logPath, operation: "write", errno: errno)
                }
                done += n
            }
        }
        guard fsync(fd) == 0 else { throw JournalError.io(path: logPath, operation: "fsync", errno: errno) }
    }

    /// Every record, oldest first. A torn last line (power loss mid-append) is ignored; any other bad
    /// line is an error naming its line number.
    public func records() throws -> [JournalRecord] {
        guard FileManager.default.fileExists(atPath: logPath) else { return [] }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: logPath)) } catch {
            throw JournalError.io(path: logPath, operation: "read", errno: EIO)
        }
        let lines = data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        let decoder = JSONDecoder()
        var result: [JournalRecord] = []
        for (i, line) in lines.enumerated() where !line.isEmpty {
            do { result.append(try decoder.decode(JournalRecord.self, from: Data(line))) } catch {
                let isLast = lines[(i + 1)...].allSatisfy(\.isEmpty)
                if isLast && data.last != UInt8(ascii: "\n") { break }
                throw JournalError.corrupt(path: logPath, line: i + 1, reason: "\(error)")
            }
        }
        return result
    }

    /// The state of every patch on `target` (by the journal alone; `PatchEngine.status` checks live bytes).
    public func patches(target: String) throws -> [PatchRecord] {
        var byID: [String: PatchRecord] = [:]
        var order: [String] = []
        for record in try records() where record.target == target {
            if byID[record.patchID] == nil { order.append(record.patchID) }
            var patch = byID[record.patchID] ?? PatchRecord(id: record.patchID, target: target, state: .applying,
                                                             hunks: record.hunks, identity: record.identity,
                                                             description: record.description)
            patch.state = record.event.resultingState
            if !record.hunks.isEmpty { patch.hunks = record.hunks }
            patch.lastEvent = record
            byID[record.patchID] = patch
        }
        return order.compactMap { byID[$0] }
    }

    /// The next sequence number (one more than the last record's).
    public func nextSequence() throws -> Int {
        (try records().last?.sequence ?? 0) + 1
    }

    private func ensureDirectory() throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDir) {
            guard isDir.boolValue else { throw JournalError.io(path: directory, operation: "use as a directory", errno: ENOTDIR) }
            return
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch { throw JournalError.io(path: directory, operation: "mkdir", errno: EACCES) }
    }
}

/// One line of the journal.
public struct JournalRecord: Sendable, Hashable, Codable {
    public enum Event: String, Sendable, Codable {
        /// About to write the hunks' replacement bytes (durable before the first byte is written).
        case applyIntent
        case applyDone
        /// Apply failed after intent; every hunk was put back as it was (or none was written).
        case applyAborted
        case revertIntent
        case revertDone
        case revertAborted
        /// `recover` finished an interrupted operation; `note` says which way.
        case recoveredApplied
        case recoveredReverted

        var resultingState: PatchRecord.State {
            switch self {
            case .applyIntent: .applying
            case .applyDone, .recoveredApplied, .revertAborted: .applied
            case .applyAborted, .revertDone, .recoveredReverted: .reverted
            case .revertIntent: .reverting
            }
        }
    }

    public var sequence: Int
    /// Seconds since 1970.
    public var time: Double
    public var event: Event
    public var patchID: String
    /// The target as the user named it (`lab`, `pid:42`, `gdb:127.0.0.1:1234`).
    public var target: String
    public var identity: TargetIdentity?
    public var description: String?
    public var hunks: [AppliedHunk]
    /// Microseconds the target was stopped for the write, when it was.
    public var pauseMicroseconds: Double?
    public var note: String?

    public init(sequence: Int, time: Double, event: Event, patchID: String, target: String,
                identity: TargetIdentity?, description: String? = nil, hunks: [AppliedHunk],
                pauseMicroseconds: Double? = nil, note: String? = nil) {
        self.sequence = sequence
        self.time = time
        self.event = event
        self.patchID = patchID
        self.target = target
        self.identity = identity
        self.description = description
        self.hunks = hunks
        self.pauseMicroseconds = pauseMicroseconds
        self.note = note
    }
}

/// A hunk as resolved on one target: where it went and the exact bytes before and after.
public struct AppliedHunk: Sendable, Hashable, Codable {
    /// `nfs_flock [nfs]+0x2f`.
    public var location: String
    public var address: UInt64
    /// The live bytes found before writing (equal to the hunk's expected bytes under its mask).
    public var original: [UInt8]
    public var replacement: [UInt8]

    public init(location: String, address: UInt64, original: [UInt8], replacement: [UInt8]) {
        self.location = location
        self.address = address
        self.original = original
        self.replacement = replacement
    }

    enum CodingKeys: String, CodingKey { case location, address, original, replacement }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        location = try c.decode(String.self, forKey: .location)
        address = try HexCoding.decodeNumber(c, .address)
        original = try HexCoding.decodeBytes(c, .original)
        replacement = try HexCoding.decodeBytes(c, .replacement)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(location, forKey: .location)
        try c.encode(Hex.address(address), forKey: .address)
        try c.encode(Hex.bytes(original), forKey: .original)
        try c.encode(Hex.bytes(replacement), forKey: .replacement)
    }
}

/// What the journal says about one patch on one target.
public struct PatchRecord: Sendable, Hashable {
    public enum State: String, Sendable {
        case applying, applied, reverting, reverted
        /// An operation was interrupted (intent without completion): `recover` must decide.
        public var isInterrupted: Bool { self == .applying || self == .reverting }
    }
    public var id: String
    public var target: String
    public var state: State
    public var hunks: [AppliedHunk]
    public var identity: TargetIdentity?
    public var description: String?
    public var lastEvent: JournalRecord?
}

public enum JournalError: Error, CustomStringConvertible, Equatable, IOFailure {
    case io(path: String, operation: String, errno: Int32)
    case corrupt(path: String, line: Int, reason: String)

    public var description: String {
        switch self {
        case let .io(path, operation, code): "\(path): \(operation) failed: \(String(cString: strerror(code))) (errno \(code))"
        case let .corrupt(path, line, reason): "\(path):\(line): journal record unreadable: \(reason)"
        }
    }
}
