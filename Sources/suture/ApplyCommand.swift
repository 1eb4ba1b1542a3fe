import ArgumentParser
import Foundation
import Patching

/// Options shared by every writing command.
struct WriteOptions: ParsableArguments {
    @Flag(name: .customLong("dry-run"), help: "Print every check and write nothing.")
    var dryRun = false

    @Option(name: .long, parsing: .upToNextOption, help: ArgumentHelp(
        "Skip the named preflight checks: identity, bytes, function, boundaries, busy.", valueName: "check"))
    var force: [String] = []

    func preflightOptions() throws -> PreflightOptions {
        var checks: Set<PreflightCheck> = []
        for name in force.flatMap({ $0.split(separator: ",").map(String.init) }) {
            guard let check = PreflightCheck(rawValue: name), PreflightCheck.forceable.contains(check) else {
                throw ValidationError("--force takes \(PreflightCheck.forceable.map(\.rawValue).sorted().joined(separator: ", ")); got \(name)")
            }
            checks.insert(check)
        }
        return PreflightOptions(force: checks)
    }
}

/// `suture apply -t T BUNDLE`.
struct ApplyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply", abstract: "Apply a patch bundle to a live target after every preflight check passes.")

    @OptionGroup var targetOptions: TargetOptions
    @OptionGroup var writeOptions: WriteOptions

    @Argument(help: ArgumentHelp("The bundle (JSON, from diff, build, poke --save or flip --save).", valueName: "bundle"))
    var bundlePath: String

    func run() throws {
        try running("apply") {
            let loaded = try PatchBundle.load(path: bundlePath)
            let session = try targetOptions.open()
            let bundle = session.bind(loaded)
            let result = try session.engine(journal: targetOptions.journal)
                .apply(bundle, options: try writeOptions.preflightOptions(), dryRun: writeOptions.dryRun)
            print(PatchReport.apply(result, target: session.name))
        }
    }
}

/// `suture revert -t T ID|--all`.
struct RevertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revert", abstract: "Put back the original bytes of applied patches.")

    @OptionGroup var targetOptions: TargetOptions

    @Flag(name: .customLong("dry-run"), help: "Print what would be restored and write nothing.")
    var dryRun = false

    @Flag(name: .long, help: "Revert even when the live bytes are no longer what Suture wrote (drift).")
    var force = false

    @Flag(name: .long, help: "Revert every applied patch on the target, newest first.")
    var all = false

    @Argument(help: ArgumentHelp("Patch ids (see `suture status`).", valueName: "id"))
    var ids: [String] = []

    func validate() throws {
        guard all != !ids.isEmpty else { throw ValidationError("give patch ids or --all, not both or neither") }
    }

    func run() throws {
        try running("revert") {
            let session = try targetOptions.open()
            let engine = session.engine(journal: targetOptions.journal)
            let targets = all ? try engine.appliedPatchIDs() : ids
            if targets.isEmpty { print("nothing applied on \(session.name)") }
            for id in targets {
                let result = try engine.revert(id: id, force: force, dryRun: dryRun)
                print(dryRun ? "dry run: would revert \(id):" : "reverted \(id) (\(PatchReport.pause(result.pause))):")
                print(PatchReport.hunks(result.hunks, from: \.replacement, to: \.original))
            }
        }
    }
}

/// `suture status -t T`.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "List the journal's patches on a target, checked against the live bytes.")

    @OptionGroup var targetOptions: TargetOptions

    func run() throws {
        try running("status") {
            let session = try targetOptions.open(access: .read)
            let statuses = try session.engine(journal: targetOptions.journal).status()
            if statuses.isEmpty { print("no Suture patches recorded for \(session.name)") }
            for s in statuses {
                let journal = s.record.state.rawValue
                let mismatch = (s.record.state == .applied) != (s.live == .applied) ? "  (journal says \(journal))" : ""
                print("\(s.record.id)  \(s.live.rawValue)\(mismatch)  \(s.detail)")
            }
        }
    }
}

/// `suture recover -t T`.
struct RecoverCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recover", abstract: "Finish or roll back an apply or revert that was interrupted.")

    @OptionGroup var targetOptions: TargetOptions

    @Flag(name: .long, help: "Complete an interrupted apply instead of rolling it back.")
    var forward = false

    func run() throws {
        try running("recover") {
            let session = try targetOptions.open()
            let results = try session.engine(journal: targetOptions.journal).recover(forward: forward)
            if results.isEmpty { print("nothing to recover on \(session.name)") }
            for r in results {
                let outcome = r.outcome == .recoveredApplied ? "applied" : "reverted"
                print("\(r.patchID): \(outcome) (\(r.rewritten) hunk\(r.rewritten == 1 ? "" : "s") rewritten)")
            }
        }
    }
}
