import ArgumentParser
import Foundation
import ELF
import Patching

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
                let session = try targetOptions.open()
                let state = FileManager.default.temporaryDirectory.appendingPathComponent("suture-bench-\(getpid())").path
                defer { try? FileManager.default.removeItem(atPath: state) }
                let engine = session.engine(journal: Journal(directory: state))
                let place = try session.resolve(expression)
                let bundle = try HandPatch(target: session.target, symbols: session.symbols).flip(at: place.address)
                var applies: [Double] = [], reverts: [Double] = []
                for _ in 0..<max(1, cycles) {
                    if let p = try engine.apply(bundle).pause?.microseconds { applies.append(p) }
                    if let p = try engine.revert(id: bundle.id).pause?.microseconds { reverts.append(p) }
                }
                print("pause window on \(session.name), \(bundle.description ?? ""), \(cycles) cycles (µs):")
                print(Self.summary("apply ", applies))
                print(Self.summary("revert", reverts))
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
