import Foundation

/// What `suture lab up` leaves in `<run folder>/state.json` for later commands: which QEMU to
/// stop (pid and start time), where its sockets are, and how it was booted.
public struct LabState: Sendable, Hashable, Codable {
    public enum Phase: String, Sendable, Codable {
        /// QEMU runs; the guest shell is not ready yet (or `up` was interrupted).
        case booting
        /// The guest shell answers on the console.
        case up
    }

    public var phase: Phase
    public var qemu: ProcessIdentity
    public var gdbPort: UInt16
    public var serialSocket: String
    public var serialLog: String
    public var qmpSocket: String
    public var bulkFile: String
    public var kaslr: Bool
    public var smp: Int
    public var memoryMB: Int
    public var nfs: Bool
    public var kernel: String
    public var initramfs: String
    public var startedAt: Date
    /// The guest's /proc/sys/kernel/random/boot_id.
    public var bootID: String?
    /// Wall time from spawning QEMU to a shell that ran a command.
    public var bootSeconds: Double?
    /// The guest's /proc/uptime when /init announced readiness.
    public var guestUptime: Double?
    public var nfsSeconds: Double?

    /// `127.0.0.1:<port>`, for `gdb:` targets.
    public var gdbAddress: String { "127.0.0.1:\(gdbPort)" }
}

/// What `status` finds in the run folder.
public enum LabStatus: Sendable, Hashable {
    case up(LabState)
    /// QEMU runs but its guest shell is not ready (another `up` is booting it, or was interrupted).
    case booting(LabState)
    /// No QEMU of ours runs. `stale` is a state file left by a VM that has gone away.
    case down(stale: LabState?)

    public var isUp: Bool {
        if case .up = self { return true }
        return false
    }
}
