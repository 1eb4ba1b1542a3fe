import ELF
import Targets

/// Why the engine would not, or could not, write.
public enum PatchError: Error, CustomStringConvertible {
    /// A preflight check failed: nothing was written.
    case refused([PreflightFinding])
    case noSymbols(location: String)
    /// The read-back after writing did not show the new bytes; the engine restored what it could.
    case verifyFailed(location: String, address: UInt64, wrote: [UInt8], found: [UInt8])
    case notInJournal(id: String, target: String)
    case wrongState(id: String, state: PatchRecord.State, wanted: String)
    case drifted(id: String, location: String, address: UInt64, expected: [UInt8], found: [UInt8])
    case interrupted(ids: [String], target: String)
    /// The hunk overlaps bytes that another applied patch changed.
    case overlaps(location: String, patch: String, other: String)
    /// A write failed part-way and the rollback failed too: the journal keeps the intent for `recover`.
    case partialWrite(id: String, underlying: String)

    public var description: String {
        switch self {
        case let .refused(findings):
            let failed = findings.filter { !$0.passed }
            return "refused by preflight:\n" + failed.map { "  ✗ \($0.check.rawValue): \($0.detail)" }.joined(separator: "\n")
        case let .noSymbols(location):
            return "\(location): no symbols for this target to place the hunk (give --kallsyms, --system-map or --elf)"
        case let .verifyFailed(location, address, wrote, found):
            return "\(location) (\(Hex.address(address))): read-back after write shows \(Hex.bytes(found)), wrote \(Hex.bytes(wrote))"
        case let .notInJournal(id, target):
            return "no patch \(id) on \(target) in the journal (see `suture status -t \(target)`)"
        case let .wrongState(id, state, wanted):
            return "patch \(id) is \(state.rawValue), cannot \(wanted)"
        case let .drifted(id, location, address, expected, found):
            return "patch \(id): \(location) (\(Hex.address(address))) holds \(Hex.bytes(found)), not the \(Hex.bytes(expected)) Suture wrote: something else changed it (use --force to overwrite)"
        case let .interrupted(ids, target):
            return "an earlier apply or revert on \(target) was interrupted (\(ids.joined(separator: ", "))): run `suture recover -t \(target)` first"
        case let .overlaps(location, patch, other):
            return "\(location) overlaps \(other) of applied patch \(patch): revert it first"
        case let .partialWrite(id, underlying):
            return "patch \(id): write failed part-way and could not be undone (\(underlying)); the journal holds the intent: run `suture recover`"
        }
    }
}
