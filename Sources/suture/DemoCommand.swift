import ArgumentParser
import Foundation
import Synchronization
import Lab

/// `suture demo`: the 2007 article's live patch, replayed and checked step by step on the lab.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Replay the 2007 article on the lab: flip nfs_flock's je live, watch flock() on NFS change, revert.",
        discussion: """
            Reuses a lab that is up with NFS (and leaves it up), else boots one with `lab up --nfs` and brings \
            it down at the end. Exits 0 only if every step's expectation held; at the first that does not, it \
            reverts the patch and restores the lab before exiting 1. The journal is a private temporary folder \
            unless --state-dir or SUTURE_STATE_DIR names one.
            """)

    @Option(name: .customLong("state-dir"), help: ArgumentHelp("The journal's folder (default: a private temporary one, or $SUTURE_STATE_DIR).", valueName: "dir"))
    var stateDirectory: String?

    func run() throws {
        let interrupts = Interrupts()
        defer { interrupts.uninstall() }
        let demo = Demo(options: Demo.Options(journalDirectory: stateDirectory, isCancelled: { interrupts.received }))
        do {
            let summary = try demo.run(report: Self.print)
            Self.write(String(format: "\nDemo complete: every expectation held, %.1f s end to end%@.\n", summary.seconds,
                              summary.bootedLab ? " (including boot and NFS setup)" : " (lab already up)"))
            Self.write("Seconds per step: " + summary.steps.enumerated()
                .map { String(format: "%d) %.1f", $0.offset + 1, $0.element.seconds) }.joined(separator: ", ") + "\n")
        } catch {
            // Cleanup was reported step by step already; the headline says what went wrong.
            Self.write("\n✗ \((error as? DemoFailure)?.headline ?? "\(error)")\n")
            if let failure = error as? DemoFailure, failure.interrupted { throw ExitCode(130) }
            throw ExitCode(ExitStatus.error)
        }
    }

    /// Steps as headings, narration plain, real output indented, checks with ✓.
    static let print: DemoReporter = { event in
        switch event {
        case let .step(number, total, title):
            write("\n[\(number)/\(total)] \(title)\n")
        case let .say(text):
            write("  \(text)\n")
        case let .command(text):
            write("  # \(text)\n")
        case let .output(text):
            write(text.split(separator: "\n", omittingEmptySubsequences: false).dropLast(text.hasSuffix("\n") ? 1 : 0)
                .map { "    " + $0 + "\n" }.joined())
        case let .check(text):
            write("  ✓ \(text)\n")
        case let .cleanup(text):
            write("  ↺ \(text)\n")
        }
    }

    static func write(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}

/// Ctrl-C (or SIGTERM) during the demo: the first one lets the current step finish, then the demo
/// stops and cleans up (reverts the patch, brings down a lab it booted); a second one ends the
/// process at once. Handled on a dispatch queue, never in a signal handler.
final class Interrupts: @unchecked Sendable {
    private let count = Mutex(0)
    private var sources: [DispatchSourceSignal] = []
    private static let signals = [SIGINT, SIGTERM]

    init() {
        for number in Self.signals {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [weak self] in self?.received(number) }
            source.resume()
            sources.append(source)
        }
    }

    var received: Bool { count.withLock { $0 > 0 } }

    private func received(_ number: Int32) {
        let seen = count.withLock { value -> Int in
            value += 1
            return value
        }
        if seen == 1 {
            DemoCommand.write("\n(interrupted: the demo stops after this step, then reverts and cleans up; interrupt again to quit at once)\n")
        } else {
            signal(number, SIG_DFL)
            raise(number)
        }
    }

    func uninstall() {
        for source in sources { source.cancel() }
        sources = []
        for number in Self.signals { signal(number, SIG_DFL) }
    }
}
