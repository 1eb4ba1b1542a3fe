import Foundation

/// How to boot the lab VM.
public struct LabOptions: Sendable, Hashable {
    /// nil: the kernel's default (KASLR on, CONFIG_RANDOMIZE_BASE=y); false adds `nokaslr`.
    public var kaslr: Bool?
    public var smp: Int
    public var memoryMB: Int
    /// Serve a tmpfs over NFSv3 inside the guest and mount it on /mnt/nfs (about 4 to 5 s).
    public var nfs: Bool
    public var bootTimeout: Double
    public var nfsTimeout: Double
    /// What to boot; nil fetches (or reuses) the cached ingredients.
    public var image: LabImage?
    /// The QEMU program, looked up in PATH unless it holds a '/'.
    public var qemu: String

    public init(kaslr: Bool? = nil, smp: Int = 2, memoryMB: Int = 512, nfs: Bool = false,
                bootTimeout: Double = 120, nfsTimeout: Double = 120, image: LabImage? = nil,
                qemu: String = "qemu-system-x86_64") {
        self.kaslr = kaslr
        self.smp = smp
        self.memoryMB = memoryMB
        self.nfs = nfs
        self.bootTimeout = bootTimeout
        self.nfsTimeout = nfsTimeout
        self.image = image
        self.qemu = qemu
    }
}

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
