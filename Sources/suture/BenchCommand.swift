import ArgumentParser
import Foundation
import ELF
import Patching
import Lab
import Targets

/// `suture bench pause`: the pause window of real apply/revert cycles, for BENCHMARKS.md.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Measure Suture on a live target (for BENCHMARKS.md).",
        subcommands: [PauseBench.self])

    struct PauseBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pause",
            abstract: "Flip the conditional jump at EXPR and revert it N times; print the pause windows.",
            discussion: "Uses a private journal in a temporary folder. Example: suture bench pause -t lab 'nfs_flock [nfs]+0x2f'")

        @OptionGroup var targetOptions: TargetOptions

        @Argument(help: ArgumentHelp("A conditional jump: \"nfs_flock [nfs]+0x2f\".", valueName: "expr"))
        var expression: String

        @Option(name: .long, help: "How many apply + revert cycles.")
        var cycles: Int = 50

        func run() throws {
            try running("bench pause") {
                // On the lab, QEMU's STOP/RESUME events say how long the guest really could not run.
                let vmLog: VMRunStateLog?
                if case .lab = try TargetSpec.parse(targetOptions.target), case let .up(state) = try LabVM().status() {
                    vmLog = try VMRunStateLog(state: state)
                } else {
                    vmLog = nil
                }
                let session = try targetOptions.open()
                let state = FileManager.default.temporaryDirectory.appendingPathComponent("suture-bench-\(getpid())").path
                defer { try? FileManager.default.removeItem(atPath: state) }
                let engine = session.engine(journal: Journal(directory: state))
                let place = try session.resolve(expression)
                let bundle = try HandPatch(target: session.target, symbols: session.symbols).flip(at: place.address)
                var applies: [PauseWindow] = [], reverts: [PauseWindow] = []
                var applyCalls: [ClosedRange<Double>] = [], revertCalls: [ClosedRange<Double>] = []
                for _ in 0..<max(1, cycles) {
                    var start = PauseWindow.realtime()
                    if let p = try engine.apply(bundle).pause { applies.append(p) }
                    applyCalls.append(start...PauseWindow.realtime())
                    start = PauseWindow.realtime()
                    if let p = try engine.revert(id: bundle.id).pause { reverts.append(p) }
                    revertCalls.append(start...PauseWindow.realtime())
                }
                print("pause window on \(session.name), \(bundle.description ?? ""), \(cycles) cycles (µs):")
                print(Self.summary("apply  (client: stop sent → resume sent)", applies.map(\.microseconds)))
                print(Self.summary("revert (client: stop sent → resume sent)", reverts.map(\.microseconds)))
                guard let vmLog else { return }
                let pauses = try vmLog.pauses(settle: 0.2)
                for (label, windows, calls) in [("apply ", applies, applyCalls), ("revert", reverts, revertCalls)] {
                    // The write's own stop is the one QEMU recorded inside the client's window.
                    let matched = windows.compactMap { w in pauses.first { $0.stoppedAt >= w.startedAt && $0.stoppedAt <= w.endedAt } }
                    print(Self.summary("\(label) (QEMU: STOP → RESUME event)", matched.map(\.microseconds)))
                    let perCall = calls.map { call in pauses.filter { call.contains($0.stoppedAt) } }
                    let counts = perCall.map(\.count).sorted()
                    print(Self.summary("\(label) (QEMU: all stops of one command, summed)",
                                       perCall.map { $0.reduce(0) { $0 + $1.microseconds } })
                          + "  stops per command: \(counts.first ?? 0)–\(counts.last ?? 0)")
                }
            }
        }

        static func summary(_ label: String, _ values: [Double]) -> String {
            let sorted = values.sorted()
            guard !sorted.isEmpty else { return "\(label)  no pauses (target cannot be stopped)" }
            let median = sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
            return String(format: "%@  min %.0f  median %.0f  max %.0f  (n=%d)", label, sorted.first!, median, sorted.last!, sorted.count)
        }
    }
}
