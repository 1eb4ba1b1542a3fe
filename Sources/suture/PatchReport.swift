import Foundation
import ELF
import Patching

/// How apply, revert, poke and flip print what the engine did.
enum PatchReport {
    static func findings(_ findings: [PreflightFinding]) -> String {
        findings.map { f in
            let mark = f.passed ? "✓" : (f.forced ? "!" : "✗")
            let forced = f.forced ? " (forced)" : ""
            return "  \(mark) \(f.check.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0)) \(f.detail)\(forced)"
        }.joined(separator: "\n")
    }

    static func hunks(_ hunks: [AppliedHunk], from: KeyPath<AppliedHunk, [UInt8]> = \.original,
                      to: KeyPath<AppliedHunk, [UInt8]> = \.replacement) -> String {
        hunks.map { "  \($0.location)  \(Hex.address($0.address))  \(Hex.bytes($0[keyPath: from])) → \(Hex.bytes($0[keyPath: to]))" }
            .joined(separator: "\n")
    }

    static func pause(_ pause: PauseWindow?) -> String {
        guard let pause else { return "target not stopped (single atomic store)" }
        return String(format: "target stopped for %.0f µs", pause.microseconds)
    }

    static func apply(_ result: PatchEngine.ApplyResult, target: String) -> String {
        var lines = ["preflight on \(target):", findings(result.preflight.findings)]
        if result.dryRun {
            lines.append("dry run: would apply \(result.bundleID):")
            lines.append(hunks(result.hunks))
            lines.append("nothing written")
        } else {
            lines.append("applied \(result.bundleID) (\(pause(result.pause))):")
            lines.append(hunks(result.hunks))
        }
        return lines.joined(separator: "\n")
    }
}
