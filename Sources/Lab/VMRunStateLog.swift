import Foundation

/// QEMU's own account of when the lab VM stopped and resumed: the `STOP` and `RESUME` events it
/// sends on QMP, each with a realtime timestamp taken inside QEMU. QEMU emits `STOP` once every vCPU
/// has paused and `RESUME` before any vCPU runs again, so a pair bounds the time the guest could
/// not run from below, as the client's stop-to-resume stopwatch bounds it from above.
///
/// QMP takes one client at a time: hold this only while measuring.
public final class VMRunStateLog {
    /// One stop of the VM as QEMU recorded it (realtime seconds).
    public struct Pause: Sendable, Hashable {
        public var stoppedAt: Double
        public var resumedAt: Double
        public var microseconds: Double { (resumedAt - stoppedAt) * 1e6 }
    }

    private let client: QMPClient
    private var stoppedAt: Double?
    private var pauses: [Pause] = []

    public convenience init(state: LabState, timeout: Double = 2) throws(LabError) {
        try self.init(socket: state.qmpSocket, timeout: timeout)
    }

    /// Any QEMU started with `-qmp unix:PATH,server=on,wait=off`.
    public init(socket: String, timeout: Double = 2) throws(LabError) {
        client = try QMPClient(socketPath: socket, timeout: timeout)
    }

    /// True when QEMU reports the VM running (`query-status`).
    public func isRunning() throws(LabError) -> Bool {
        try client.execute("query-status").contains("\"running\": true")
    }

    /// Every complete pause seen so far (waiting up to `settle` seconds for events still in flight),
    /// oldest first; the log keeps them.
    public func pauses(settle: Double = 0.05) throws(LabError) -> [Pause] {
        for line in try client.events(quietFor: settle) {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let event = object["event"] as? String,
                  let stamp = object["timestamp"] as? [String: Any],
                  let seconds = (stamp["seconds"] as? NSNumber)?.doubleValue,
                  let micro = (stamp["microseconds"] as? NSNumber)?.doubleValue else { continue }
            let time = seconds + micro / 1e6
            switch event {
            case "STOP": stoppedAt = time
            case "RESUME":
                if let start = stoppedAt { pauses.append(Pause(stoppedAt: start, resumedAt: time)) }
                stoppedAt = nil
            default: break
            }
        }
        return pauses
    }
}
