import ArgumentParser
import Foundation
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
        let demo = Demo(options: Demo.Options(journalDirectory: stateDirectory))
        do {
            let summary = try demo.run(report: Self.print)
            Self.write(String(format: "\nDemo complete: every expectation held, %.1f s end to end%@.\n", summary.seconds,
                              summary.bootedLab ? " (including boot and NFS setup)" : " (lab already up)"))
        } catch {
            Self.write("\n✗ \(error)\n")
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
