import Foundation

/// The phases of `suture build`, in order.
public enum KernelBuildPhase: String, Sendable, CaseIterable, CustomStringConvertible {
    case download
    case unpack
    case identity
    case olddefconfig
    case modulesPrepare = "modules_prepare"
    case buildBefore = "build before"
    case buildAfter = "build after"
    case diff

    public var description: String { rawValue }
}

/// What a build reports while it runs; the library never prints, the CLI does.
public enum KernelBuildEvent: Sendable {
    case started(KernelBuildPhase, detail: String)
    case finished(KernelBuildPhase, seconds: Double, detail: String)
    /// The phase's result was already there (cached) or it does not apply.
    case skipped(KernelBuildPhase, reason: String)
    /// Something the user should know that is not a failure (a restored journal, config changes).
    case note(String)
}

public typealias KernelBuildProgress = @Sendable (KernelBuildEvent) -> Void

/// Wall-clock timing of phases (monotonic).
enum KernelBuildClock {
    static var now: ContinuousClock.Instant { ContinuousClock.now }

    static func seconds(since start: ContinuousClock.Instant) -> Double {
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }
}
